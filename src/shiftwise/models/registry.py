"""Named model configurations and ``create_model`` / ``list_models`` (timm-style).

Models are data: each name maps to a :class:`ModelConfig` (depths, widths, kernel sizes,
block, operator), built by :class:`~shiftwise.models.network.LargeKernelNet`.

Paper models (released configurations, 224x224 ImageNet):

* ``slak_{tiny,small,base}``: SLaK (ICLR 2023), ConvNeXt macro, decomposed kernels
  51/49/47/13 with short side 5 and a 5x5 small kernel, width factor 1.3.
* ``sw_{tiny,small,base}``: ShiftwiseConv v2 (CVPR 2025), UniRepLKNet macro, big kernels
  51/49/47/13 from 3x3 pieces, ghost ratio 0.23, 2 paths, 4 shuffles.
* ``convnext_tiny``: the ConvNeXt-T baseline (7x7 depthwise convs).

CPU-sized variants for 64x64 inputs (``*_atto``) share depths ``[2, 2, 4, 2]`` and widths
``[32, 64, 128, 256]`` so that they differ only in block and operator. At 64 px the stage
maps are 16, 8, 4 and 2 pixels wide; the large-kernel variants use kernels 31/15/7/7, i.e.
``2 * map - 1`` for the first three stages (every output sees the whole map, no tap is wasted)
and never smaller than ConvNeXt's 7; ``convnext_atto`` uses 7 everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from shiftwise.models.features import FeatureNet
from shiftwise.models.network import LargeKernelNet

__all__ = ["MODEL_CONFIGS", "ModelConfig", "create_model", "list_models", "pretrained_cfg"]

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
ATTO_DEPTHS, ATTO_DIMS, ATTO_KERNELS = (2, 2, 4, 2), (32, 64, 128, 256), (31, 15, 7, 7)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one named model (arguments of :class:`LargeKernelNet`)."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    block: str
    operator: str
    operator_kwargs: dict[str, Any] = field(default_factory=dict)
    width_factor: float = 1.0
    input_size: int = 224
    paper: str = ""


MODEL_CONFIGS: dict[str, ModelConfig] = {
    "sw_tiny": ModelConfig(
        (3, 3, 18, 3), (80, 160, 320, 640), PAPER_KERNELS, "shiftwise", "shiftwise", SW_KWARGS,
        paper="ShiftwiseConv (CVPR 2025) SW-T",
    ),
    "sw_small": ModelConfig(
        (3, 3, 27, 3), (96, 192, 384, 768), PAPER_KERNELS, "shiftwise", "shiftwise", SW_KWARGS,
        paper="ShiftwiseConv (CVPR 2025) SW-S",
    ),
    "sw_base": ModelConfig(
        (3, 3, 27, 3), (128, 256, 512, 1024), PAPER_KERNELS, "shiftwise", "shiftwise", SW_KWARGS,
        paper="ShiftwiseConv (CVPR 2025) SW-B",
    ),
    "slak_tiny": ModelConfig(
        (3, 3, 9, 3), (96, 192, 384, 768), PAPER_KERNELS, "convnext", "slak", SLAK_KWARGS, 1.3,
        paper="SLaK (ICLR 2023) SLaK-T",
    ),
    "slak_small": ModelConfig(
        (3, 3, 27, 3), (96, 192, 384, 768), PAPER_KERNELS, "convnext", "slak", SLAK_KWARGS, 1.3,
        paper="SLaK (ICLR 2023) SLaK-S",
    ),
    "slak_base": ModelConfig(
        (3, 3, 27, 3), (128, 256, 512, 1024), PAPER_KERNELS, "convnext", "slak", SLAK_KWARGS, 1.3,
        paper="SLaK (ICLR 2023) SLaK-B",
    ),
    "convnext_tiny": ModelConfig(
        (3, 3, 9, 3), (96, 192, 384, 768), (7, 7, 7, 7), "convnext", "conv",
        paper="ConvNeXt-T baseline",
    ),
    "sw_atto": ModelConfig(
        ATTO_DEPTHS, ATTO_DIMS, ATTO_KERNELS, "shiftwise", "shiftwise", SW_KWARGS, input_size=64
    ),
    "slak_atto": ModelConfig(
        ATTO_DEPTHS, ATTO_DIMS, ATTO_KERNELS, "convnext", "slak", SLAK_KWARGS, input_size=64
    ),
    "convnext_atto": ModelConfig(
        ATTO_DEPTHS, ATTO_DIMS, (7, 7, 7, 7), "convnext", "conv", input_size=64
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


def pretrained_cfg(name: str, num_classes: int = 1000) -> dict[str, Any]:
    """timm-style ``pretrained_cfg`` of ``name`` (no weights are shipped: ``url`` is empty)."""
    config = get_config(name)
    size = config.input_size
    return {
        "architecture": name,
        "url": "",
        "num_classes": num_classes,
        "input_size": (3, size, size),
        "pool_size": (size // 32, size // 32),
        "crop_pct": 0.875 if size >= 224 else 1.0,
        "interpolation": "bicubic",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "first_conv": "stem.0",
        "classifier": "head.fc",
        "paper": config.paper,
    }


def create_model(
    name: str,
    pretrained: bool = False,
    num_classes: int = 1000,
    drop_path_rate: float = 0.0,
    width_factor: float | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] = (0, 1, 2, 3),
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name`` (see :func:`list_models`).

    Args:
        name: registered model name, e.g. ``"sw_tiny"``.
        pretrained: must be False: no weights are shipped (convert official checkpoints with
            ``shiftwise convert`` and load them with ``shiftwise.models.load_checkpoint``).
        num_classes: classifier outputs (0: pooled features).
        drop_path_rate: stochastic depth of the last block.
        width_factor: multiplies every stage width; ``None`` keeps the config's (1.3 for SLaK).
        features_only: return a :class:`FeatureNet` giving the stage outputs instead.
        out_indices: stages returned when ``features_only``.
        **kwargs: any other :class:`LargeKernelNet` argument (``in_chans``, ``drop_rate``,
            ``kernel_sizes``, ``operator``, ``operator_kwargs`` (merged into the config's
            when the operator is unchanged), ``depths``, ``dims``, ``block``, ...).
    """
    if pretrained:
        raise ValueError(
            "pretrained: no weights are shipped; convert an official checkpoint with "
            "`shiftwise convert` and load it with shiftwise.models.load_checkpoint"
        )
    config = get_config(name)
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)  # timm's create_model passes these to every entry point
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
    model = LargeKernelNet(**arguments)
    model.pretrained_cfg = model.default_cfg = pretrained_cfg(name, num_classes)
    if features_only:
        return FeatureNet(model, out_indices)
    return model
