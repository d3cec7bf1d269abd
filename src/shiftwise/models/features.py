"""``features_only`` backbones: the stage outputs at strides 4, 8, 16, 32 (timm conventions)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FeatureInfo", "FeatureNet"]


class FeatureInfo:
    """Channels, reduction and module name of the selected feature maps (timm's interface).

    ``info`` holds one dict per selected stage (``num_chs``, ``reduction``, ``module``,
    ``index``); ``channels()``, ``reduction()`` and ``module_name()`` return lists, or one
    value for ``idx``.
    """

    def __init__(self, info: Sequence[dict], out_indices: Sequence[int]) -> None:
        self.out_indices = tuple(out_indices)
        self.info = [{**info[i], "index": i} for i in self.out_indices]

    def get(self, key: str, idx: int | None = None) -> list | object:
        if idx is None:
            return [entry[key] for entry in self.info]
        return self.info[idx][key]

    def channels(self, idx: int | None = None) -> list[int] | int:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | None = None) -> list[int] | int:
        return self.get("reduction", idx)

    def module_name(self, idx: int | None = None) -> list[str] | str:
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
    ``[B, C_in, H, W]`` to a list of ``[B, C_i, H / r_i, W / r_i]`` with ``r_i = 4 * 2**i``.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] = (0, 1, 2, 3)) -> None:
        super().__init__()
        self.out_indices = check_out_indices(out_indices)
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        self.stem = model.stem
        self.stages = nn.Sequential(*list(model.stages)[: self.out_indices[-1] + 1])
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})
        self.default_cfg = self.pretrained_cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                features.append(x)
        return features
