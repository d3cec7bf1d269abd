"""Named model configurations and ``create_model`` / ``list_models`` (timm-style).

Models are data: each name maps to a :class:`ModelConfig` (depths, widths, kernel sizes,
block, operator), built by :class:`~shiftwise.models.network.MacroNet`.

Paper models (released configurations, 224x224 ImageNet):

* ``slak_{tiny,small,base}``: SLaK (ICLR 2023), ConvNeXt macro, decomposed kernels
  51/49/47/13 with short side 5 and a 5x5 small kernel, width factor 1.3.
* ``sw_{tiny,small,base}``: ShiftwiseConv v2 (CVPR 2025), UniRepLKNet macro, big kernels
  51/49/47/13 from 3x3 pieces, ghost ratio 0.23, 2 paths, 4 shuffles.
* ``sw_v1_tiny``, ``sw_v1_tiny_1_3x``: the official ``SW_v1_slak.py`` network (the paper's
  "sparse-sw" row): the shift-wise operator in the SLaK/ConvNeXt macro, depths ``[3, 3, 9, 3]``,
  widths ``[96, 192, 384, 768]`` (times 1.3 for ``_1_3x``), kernels 51/49/45/13 from 5x5
  pieces, ghost count ``int(C * 0.23)`` (``ghost_rule="v1"``), 2 paths, 4 shuffles, no SE.
* ``convnext_tiny``: the ConvNeXt-T baseline (7x7 depthwise convs).

CPU-sized variants for 64x64 inputs (``*_atto``) share depths ``[2, 2, 4, 2]`` and widths
``[32, 64, 128, 256]`` so that they differ only in block and operator. At 64 px the stage
maps are 16, 8, 4 and 2 pixels wide; the large-kernel variants use kernels 31/15/7/7, i.e.
``2 * map - 1`` for the first three stages (every output sees the whole map, no tap is wasted)
and never smaller than ConvNeXt's 7; ``convnext_atto`` uses 7 everywhere.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from shiftwise.errors import UsageError
from shiftwise.io import load_checkpoint
from shiftwise.models.features import build_features
from shiftwise.models.network import MacroNet

__all__ = [
    "FAMILIES",
    "MODEL_CONFIGS",
    "ModelConfig",
    "ModelFamily",
    "check_width_factor",
    "create_model",
    "list_models",
    "model_family",
    "pretrained_cfg",
    "resolve_pretrained_cfg",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_KERNELS = (51, 49, 47, 13)
SW_KWARGS = {
    "small_kernel": 3,
    "ghost_ratio": 0.23,
    "n_paths": 2,
    "n_shuffles": 4,
    "channel_order": "official",  # the order of the official checkpoints
}
SLAK_KWARGS = {"short_side": 5, "small_kernel": 5}
SW_V1_KERNELS = (51, 49, 45, 13)
SW_V1_KWARGS = {
    "small_kernel": 5, "ghost_ratio": 0.23, "ghost_rule": "v1", "n_paths": 2, "n_shuffles": 4,
    "channel_order": "official",  # as the official SW_v1_slak.py
}  # fmt: skip
ATTO_DEPTHS, ATTO_DIMS, ATTO_KERNELS = (2, 2, 4, 2), (32, 64, 128, 256), (31, 15, 7, 7)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one named model (arguments of :class:`MacroNet`)."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    block: str
    operator: str
    operator_kwargs: dict[str, Any] = field(default_factory=dict)
    width_factor: float = 1.0
    input_size: int = 224
    paper: str = ""
    family: str = ""  # a key of FAMILIES


@dataclass(frozen=True)
class ModelFamily:
    """What differs by model family, in one place (never by testing a model's name).

    Attributes:
        name: the family, also the ``--from`` source name of ``shiftwise convert``.
        paper: timm ``pretrained_cfg`` metadata (``paper_name``, ``paper_ids``, ``origin_url``).
        granularity: default sparse-training mask granularity (``"group"``: whole SW pieces).
        paper_recipe: overrides of the paper training recipe (e.g. SW-T's drop path 0.2).
        official_block_keys: ``(pattern, replacement)`` regex renames of the official
            checkpoints' block keys (after ``stages.{s}.{b}.``) to ours, tried in order.
    """

    name: str
    paper: Mapping[str, str]
    granularity: str = "fine"
    paper_recipe: Mapping[str, Any] = field(default_factory=dict)
    official_block_keys: tuple[tuple[str, str], ...] = ()


FAMILIES: dict[str, ModelFamily] = {
    "sw": ModelFamily(
        "sw",
        {
            "paper_name": "ShiftwiseConv: Small Convolutional Kernel with Large Kernel Effect",
            "paper_ids": "arXiv:2401.12736",
            "origin_url": "https://github.com/lidc54/shift-wiseConv",
        },
        granularity="group",
        paper_recipe={"drop_path": 0.2},  # as released for SW-T
        official_block_keys=(
            (r"large_kernel\.LoRAs\.(\d+)\.", r"conv_dw.paths.\1."),
            (r"large_kernel\.LoRA\.", "conv_dw.paths.0."),
            (r"large_kernel\.bn_lora1\.", "conv_dw.bn_h."),
            (r"large_kernel\.bn_lora2\.", "conv_dw.bn_v."),
            (r"large_kernel\.bn_small\.", "conv_dw.bn_identity."),
            (r"pwconv1\.1\.", "fc1."),
            (r"act\.1\.", "grn."),
            (r"pwconv2\.0\.", "fc2."),
            (r"pwconv2\.2\.", "norm2."),
            (r"(gamma|norm\.\w+|se\.(down|up)\.\w+)$", r"\1"),
        ),
    ),
    "slak": ModelFamily(
        "slak",
        {
            "paper_name": "More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using "
            "Sparsity",
            "paper_ids": "arXiv:2207.03620",
            "origin_url": "https://github.com/VITA-Group/SLaK",
        },
        official_block_keys=(
            (r"large_kernel\.LoRA1\.", "conv_dw.tall."),
            (r"large_kernel\.LoRA2\.", "conv_dw.wide."),
            (r"large_kernel\.small_conv\.", "conv_dw.small."),
            (r"pwconv1\.", "fc1."),
            (r"pwconv2\.", "fc2."),
            (r"(gamma|norm\.\w+)$", r"\1"),
        ),
    ),
    "convnext": ModelFamily(
        "convnext",
        {
            "paper_name": "A ConvNet for the 2020s",
            "paper_ids": "arXiv:2201.03545",
            "origin_url": "https://github.com/facebookresearch/ConvNeXt",
        },
    ),
}


MODEL_CONFIGS: dict[str, ModelConfig] = {
    "sw_tiny": ModelConfig(
        (3, 3, 18, 3), (80, 160, 320, 640), PAPER_KERNELS, "shiftwise", "shiftwise", SW_KWARGS,
        paper="ShiftwiseConv (CVPR 2025) SW-T", family="sw",
    ),
    "sw_small": ModelConfig(
        (3, 3, 27, 3), (96, 192, 384, 768), PAPER_KERNELS, "shiftwise", "shiftwise", SW_KWARGS,
        paper="ShiftwiseConv (CVPR 2025) SW-S", family="sw",
    ),
    "sw_base": ModelConfig(
        (3, 3, 27, 3), (128, 256, 512, 1024), PAPER_KERNELS, "shiftwise", "shiftwise", SW_KWARGS,
        paper="ShiftwiseConv (CVPR 2025) SW-B", family="sw",
    ),
    "slak_tiny": ModelConfig(
        (3, 3, 9, 3), (96, 192, 384, 768), PAPER_KERNELS, "convnext", "slak", SLAK_KWARGS, 1.3,
        paper="SLaK (ICLR 2023) SLaK-T", family="slak",
    ),
    "slak_small": ModelConfig(
        (3, 3, 27, 3), (96, 192, 384, 768), PAPER_KERNELS, "convnext", "slak", SLAK_KWARGS, 1.3,
        paper="SLaK (ICLR 2023) SLaK-S", family="slak",
    ),
    "slak_base": ModelConfig(
        (3, 3, 27, 3), (128, 256, 512, 1024), PAPER_KERNELS, "convnext", "slak", SLAK_KWARGS, 1.3,
        paper="SLaK (ICLR 2023) SLaK-B", family="slak",
    ),
    "sw_v1_tiny": ModelConfig(
        (3, 3, 9, 3), (96, 192, 384, 768), SW_V1_KERNELS, "convnext", "shiftwise", SW_V1_KWARGS,
        paper="ShiftwiseConv (CVPR 2025) sparse-sw: SW_v1_slak.py ShiftWise_v1_tiny",
        family="sw",
    ),
    "sw_v1_tiny_1_3x": ModelConfig(
        (3, 3, 9, 3), (96, 192, 384, 768), SW_V1_KERNELS, "convnext", "shiftwise", SW_V1_KWARGS,
        1.3, paper="ShiftwiseConv (CVPR 2025) sparse-sw: ShiftWise_v1_tiny, width_factor 1.3",
        family="sw",
    ),
    "convnext_tiny": ModelConfig(
        (3, 3, 9, 3), (96, 192, 384, 768), (7, 7, 7, 7), "convnext", "conv",
        paper="ConvNeXt-T baseline", family="convnext",
    ),
    "sw_atto": ModelConfig(
        ATTO_DEPTHS, ATTO_DIMS, ATTO_KERNELS, "shiftwise", "shiftwise", SW_KWARGS, input_size=64,
        family="sw",
    ),
    "slak_atto": ModelConfig(
        ATTO_DEPTHS, ATTO_DIMS, ATTO_KERNELS, "convnext", "slak", SLAK_KWARGS, input_size=64,
        family="slak",
    ),
    "convnext_atto": ModelConfig(
        ATTO_DEPTHS, ATTO_DIMS, (7, 7, 7, 7), "convnext", "conv", input_size=64,
        family="convnext",
    ),
}  # fmt: skip


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching the shell-style ``pattern``."""
    from fnmatch import fnmatch

    return sorted(name for name in MODEL_CONFIGS if fnmatch(name, pattern))


def get_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` of ``name``; ``ValueError`` listing the names if unknown."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"model: unknown name {name!r}, expected one of {list_models()}")
    return MODEL_CONFIGS[name]


def check_width_factor(name: str, width_factor: float | None, option: str = "width_factor") -> None:
    """Raise one :class:`~shiftwise.errors.UsageError` naming ``option`` unless
    ``width_factor`` (``None``: the config's) is finite and gives model ``name`` stage widths
    of at least 2 channels (what :class:`MacroNet` builds)."""
    if width_factor is None:
        return
    if (
        not math.isfinite(width_factor)
        or width_factor <= 0
        or min(int(d * width_factor) for d in get_config(name).dims) < 2
    ):
        smallest = math.ceil(2 / min(get_config(name).dims) * 1e6) / 1e6
        raise UsageError(
            f"{option}: {name} needs a width factor >= {smallest:g} (stage widths of at "
            f"least 2 channels), got {width_factor}"
        )


def model_family(name: str) -> ModelFamily:
    """The :class:`ModelFamily` of the registered model ``name`` (``ValueError`` if unknown)."""
    return FAMILIES[get_config(name).family]


def pretrained_cfg(name: str, num_classes: int = 1000) -> dict[str, Any]:
    """timm-style default ``pretrained_cfg`` of ``name`` (timm's ``PretrainedCfg`` fields).

    No weights are shipped (no ``url`` or ``file``); ``file`` may be set by an overlay
    (:func:`create_model`). ``crop_pct`` is timm's 0.875 at 224 px and 1.0 for the 64 px
    ``*_atto`` models (trained on uncropped images).
    """
    config = get_config(name)
    size = config.input_size
    return {
        "architecture": name,
        "custom_load": False,
        "num_classes": num_classes,
        "input_size": (3, size, size),
        "pool_size": (size // 32, size // 32),
        "fixed_input_size": False,
        "crop_pct": 0.875 if size >= 224 else 1.0,
        "crop_mode": "center",
        "interpolation": "bicubic",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "first_conv": "stem.0",
        "classifier": "head.fc",
        "license": "apache-2.0",
        "description": config.paper or f"{name}: CPU-sized variant for 64x64 inputs",
        **FAMILIES[config.family].paper,
    }


def resolve_pretrained_cfg(
    name: str,
    base: object = None,
    overlay: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``pretrained_cfg`` of a model: the default (or ``base``) updated by ``overlay``.

    ``base`` is what timm's ``create_model`` passes as ``pretrained_cfg``: ``None`` or ``""``
    (the default), a mapping, or a dataclass such as timm's ``PretrainedCfg``; ``None``
    fields are left out. As in timm, the cfg describes the weights and input pipeline, not the
    built model: its ``num_classes`` stays the cfg's whatever the model's.
    """
    cfg = pretrained_cfg(name)
    if dataclasses.is_dataclass(base) and not isinstance(base, type):
        base = dataclasses.asdict(base)
    if isinstance(base, Mapping):
        cfg.update({key: value for key, value in base.items() if value is not None})
    elif base not in (None, ""):
        raise ValueError(
            f"pretrained_cfg: expected a dict, a timm PretrainedCfg or None for {name!r} "
            f"(it has no pretrained tags), got {base!r}"
        )
    if overlay is not None and not isinstance(overlay, Mapping):
        raise TypeError(f"pretrained_cfg_overlay: expected a dict, got {type(overlay).__name__}")
    cfg.update(overlay or {})
    return cfg


def create_model(
    name: str,
    pretrained: bool = False,
    num_classes: int | None = None,
    drop_path_rate: float = 0.0,
    width_factor: float | None = None,
    features_only: bool = False,
    out_indices: int | tuple[int, ...] = (0, 1, 2, 3),
    feature_cls: str | type | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    pretrained_cfg: object = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
    cache_dir: object = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name`` (see :func:`list_models`).

    Args:
        name: registered model name, e.g. ``"sw_tiny"``.
        pretrained: load the weights file named by the ``pretrained_cfg``'s ``file``
            (e.g. ``pretrained_cfg_overlay=dict(file=path)``) with
            :func:`~shiftwise.models.load_checkpoint`. No weights are shipped, so without a
            ``file`` this is an error.
        num_classes: classifier outputs (0: pooled features); ``None`` takes the
            ``pretrained_cfg``'s (1000 unless overlaid, as in timm).
        drop_path_rate: stochastic depth of the last block.
        width_factor: multiplies every stage width; ``None`` keeps the config's (1.3 for SLaK).
        features_only: return a backbone giving the stage outputs instead
            (:func:`~shiftwise.models.features.build_features`).
        out_indices: stages returned when ``features_only``.
        feature_cls: with ``features_only``: ``None`` for our
            :class:`~shiftwise.models.FeatureNet`; timm's ``"getter"``, ``"list"``, ``"dict"``,
            ``"hook"``, ``"fx"`` (or a class) wrap the model in timm's feature classes.
        checkpoint_path: weights to load after building (``load_checkpoint``, strict).
        pretrained_cfg: base of ``model.pretrained_cfg`` (timm passes it; see
            :func:`resolve_pretrained_cfg`).
        pretrained_cfg_overlay: entries that override the ``pretrained_cfg`` (kept in it).
        cache_dir: accepted for timm's ``create_model``; unused (nothing is downloaded).
        **kwargs: any other :class:`MacroNet` argument (``in_chans``, which defaults to
            the cfg's ``input_size[0]``, ``drop_rate``,
            ``global_pool``, ``kernel_sizes``, ``operator``, ``operator_kwargs`` (merged into
            the config's when the operator is unchanged), ``depths``, ``dims``, ``block``, ...).

    The weights (``pretrained`` file, then ``checkpoint_path``) load into the full classifier
    before a ``features_only`` backbone is cut from it, so files written for the classifier
    fit; ``num_classes`` must match the file's.
    """
    config = get_config(name)
    del cache_dir  # timm passes it to every entry point; nothing is ever downloaded
    kwargs.pop("pretrained_model_args", None)  # timm's record of hub arguments, already merged
    output_stride = kwargs.pop("output_stride", None)
    if output_stride not in (None, 32):
        raise ValueError(
            f"output_stride: only 32 is supported (no dilated stages), got {output_stride!r}"
        )
    cfg = resolve_pretrained_cfg(name, pretrained_cfg, pretrained_cfg_overlay)
    if num_classes is None:
        num_classes = cfg["num_classes"]
    kwargs.setdefault("in_chans", cfg["input_size"][0])
    if pretrained and not cfg.get("file"):
        raise ValueError(
            f"pretrained: no weights are shipped for {name!r}; pass the file to load as "
            "pretrained_cfg_overlay=dict(file=path) (or checkpoint_path=path), e.g. one written "
            "by `shiftwise train` or `shiftwise convert`"
        )
    arguments: dict[str, Any] = {
        "depths": config.depths,
        "dims": config.dims,
        "kernel_sizes": config.kernel_sizes,
        "block": config.block,
        "operator": config.operator,
        "width_factor": config.width_factor if width_factor is None else width_factor,
        "num_classes": num_classes,
        "drop_path_rate": drop_path_rate,
    }
    operator_kwargs = dict(config.operator_kwargs)
    if kwargs.get("operator", config.operator) != config.operator:
        operator_kwargs = {}
    operator_kwargs.update(kwargs.pop("operator_kwargs", None) or {})
    arguments.update(kwargs)
    arguments["operator_kwargs"] = operator_kwargs
    model = MacroNet(**arguments)
    model.pretrained_cfg = model.default_cfg = cfg
    if pretrained:
        load_checkpoint(model, cfg["file"])
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    if features_only:
        return build_features(model, out_indices, feature_cls)
    return model
