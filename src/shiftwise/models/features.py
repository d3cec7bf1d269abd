"""``features_only`` backbones: the stage outputs at strides 4, 8, 16, 32 (timm conventions).

:class:`FeatureNet` is our backbone (with mmdet-style ``frozen_stages`` / ``norm_eval``);
:func:`build_features` also wraps a model in timm's own feature classes when asked by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["TIMM_FEATURE_CLASSES", "FeatureInfo", "FeatureNet", "build_features"]

# ``feature_cls`` names of timm's ``create_model(..., features_only=True)``.
TIMM_FEATURE_CLASSES = ("list", "dict", "hook", "fx", "getter")


class FeatureInfo:
    """Channels, reduction and module name of the selected feature maps (timm's interface).

    ``info`` holds one dict per selected stage (``num_chs``, ``reduction``, ``module``,
    ``index``); ``channels()``, ``reduction()`` and ``module_name()`` return lists, or one
    value for an int ``idx`` (a list of positions selects several), as timm's ``FeatureInfo``.
    """

    def __init__(self, info: Sequence[dict], out_indices: Sequence[int]) -> None:
        self.out_indices = tuple(out_indices)
        self.info = [{**info[i], "index": i} for i in self.out_indices]

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> list | object:
        if idx is None:
            return [entry[key] for entry in self.info]
        if isinstance(idx, Sequence):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(
        self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None
    ) -> list[dict] | dict:
        """The info dicts (restricted to ``keys``) of all entries, or of ``idx``."""

        def select(entry: dict) -> dict:
            return dict(entry) if keys is None else {key: entry[key] for key in keys}

        if idx is None:
            return [select(entry) for entry in self.info]
        if isinstance(idx, Sequence):
            return [select(self.info[i]) for i in idx]
        return select(self.info[idx])

    def channels(self, idx: int | Sequence[int] | None = None) -> list[int] | int:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> list[int] | int:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> list[str] | str:
        return self.get("module", idx)

    def __getitem__(self, idx: int) -> dict:
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info})"


def check_out_indices(out_indices: object, n_stages: int = 4) -> tuple[int, ...]:
    """Normalise ``out_indices`` (stage numbers, negatives count from the end) to a tuple."""
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        out_indices = (out_indices,)
    if not isinstance(out_indices, Sequence) or not out_indices:
        raise ValueError(f"out_indices: expected stage numbers in [0, 4), got {out_indices!r}")
    result = []
    for index in out_indices:
        if (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not -n_stages <= index < n_stages
        ):
            raise ValueError(f"out_indices: expected stage numbers in [0, 4), got {out_indices!r}")
        result.append(index % n_stages)
    if len(set(result)) != len(result) or result != sorted(result):
        raise ValueError(f"out_indices: expected increasing distinct stages, got {out_indices!r}")
    return tuple(result)


class FeatureNet(nn.Module):
    """Backbone returning the outputs of the stages in ``out_indices``.

    Keeps the ``stem`` and ``stages`` modules of ``model`` (same ``state_dict`` keys, minus
    the head; later stages than the last requested one are dropped). ``forward`` maps
    ``[B, C_in, H, W]`` to a list of ``[B, C_i, H_i, W_i]`` with ``H_i = H / r_i`` rounded as
    the strided convs round (exact when ``H`` and ``W`` are multiples of 32), ``r_i = 4 * 2**i``.

    Args:
        model: a :class:`~shiftwise.models.MacroNet`.
        out_indices: stages to return (negative counts from the end).
        frozen_stages: as mmdet backbones: ``-1`` freezes nothing, ``n >= 0`` the stem and
            the first ``n`` stages (no gradients, kept in eval mode: BatchNorm statistics and
            drop path frozen too).
        norm_eval: keep every BatchNorm in eval mode while training (frozen statistics).
    """

    def __init__(
        self,
        model: nn.Module,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        self.out_indices = check_out_indices(out_indices)
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int):
            raise TypeError(f"frozen_stages: expected an int in [-1, 4], got {frozen_stages!r}")
        if not -1 <= frozen_stages <= len(model.stages):
            raise ValueError(f"frozen_stages: expected an int in [-1, 4], got {frozen_stages}")
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        self.stem = model.stem
        self.stages = nn.Sequential(*list(model.stages)[: self.out_indices[-1] + 1])
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.pretrained_cfg = features_cfg(getattr(model, "pretrained_cfg", {}))
        self.default_cfg = self.pretrained_cfg
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and the first ``frozen_stages`` stages (none when ``-1``)."""
        if self.frozen_stages < 0:
            return []
        return [self.stem, *list(self.stages)[: self.frozen_stages]]

    def train(self, mode: bool = True) -> FeatureNet:
        """Set train/eval mode, keeping frozen stages (and with ``norm_eval`` all BNs) in eval."""
        super().train(mode)
        if mode:
            for module in self.frozen_modules():
                module.eval()
            if self.norm_eval:
                for module in self.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                features.append(x)
        return features


def features_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """A classifier's ``pretrained_cfg`` without its head entries (as timm's backbones)."""
    return {k: v for k, v in cfg.items() if k not in ("num_classes", "classifier", "global_pool")}


def build_features(
    model: nn.Module, out_indices: int | Sequence[int], feature_cls: str | type | None = None
) -> nn.Module:
    """The ``features_only`` form of ``model``, giving the stages of ``out_indices``.

    ``feature_cls=None`` gives our :class:`FeatureNet`; one of :data:`TIMM_FEATURE_CLASSES`
    (timm's ``create_model(..., feature_cls=...)``) wraps ``model`` in that timm class
    (``list``/``dict``: module graph, ``hook``: forward hooks, ``fx``: torch.fx graph,
    ``getter``: ``forward_intermediates``), which needs timm; a class is called as
    ``feature_cls(model, out_indices)``.
    """
    if feature_cls is None:
        return FeatureNet(model, out_indices)
    if isinstance(feature_cls, type):
        wrapped = feature_cls(model, check_out_indices(out_indices, len(model.stages)))
        wrapped.pretrained_cfg = wrapped.default_cfg = features_cfg(model.pretrained_cfg)
        return wrapped
    if feature_cls not in TIMM_FEATURE_CLASSES:
        raise ValueError(
            f"feature_cls: expected None or one of {TIMM_FEATURE_CLASSES}, got {feature_cls!r}"
        )
    try:
        from timm.models import _features, _features_fx
    except ImportError as error:
        raise ImportError(
            f"feature_cls: {feature_cls!r} wraps the model in timm's class, "
            f"and timm does not import ({error})"
        ) from error
    out_indices = check_out_indices(out_indices, len(model.stages))
    if feature_cls == "list":
        wrapped = _features.FeatureListNet(model, out_indices, flatten_sequential=True)
    elif feature_cls == "dict":
        wrapped = _features.FeatureDictNet(model, out_indices, flatten_sequential=True)
    elif feature_cls == "hook":
        wrapped = _features.FeatureHookNet(model, out_indices)
    elif feature_cls == "fx":
        wrapped = _features_fx.FeatureGraphNet(model, out_indices)
    else:
        wrapped = _features.FeatureGetterNet(model, out_indices)
    wrapped.pretrained_cfg = wrapped.default_cfg = features_cfg(model.pretrained_cfg)
    return wrapped
