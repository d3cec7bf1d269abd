"""Named model configurations and ``create_model`` / ``list_models`` (timm-style).

Models are data: each name maps to an :class:`Architecture` (depths, widths, kernel sizes,
block, operator, the input sizes it is made for), built by
:class:`~shiftwise.models.network.MacroNet` once :func:`check_model_arguments` (the one
validator of the arguments, :mod:`shiftwise.models.arguments`) has accepted them.

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
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shiftwise.errors import UsageError
from shiftwise.io import load_checkpoint
from shiftwise.models.arguments import check_arguments, check_network
from shiftwise.models.features import build_features
from shiftwise.models.network import MacroNet

__all__ = [
    "FAMILIES",
    "MODEL_CONFIGS",
    "Architecture",
    "ModelFamily",
    "check_image_size",
    "check_model_arguments",
    "create_model",
    "list_models",
    "max_input_size",
    "min_input_size",
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
class Architecture:
    """One named model: the arguments of :class:`MacroNet` and the inputs it is made for.

    ``input_size``: the side it was designed and trained at; ``recipe``: the training recipe
    it was designed for (``"cpu"`` for the CPU-sized ``*_atto`` models). ``min_input_size``: the
    smallest side it runs on (its total reduction: a stride-4 stem and three stride-2
    stages leave every stage at least one pixel). Sides above ``MAX_INPUT_FACTOR *
    input_size`` are refused (:func:`max_input_size`).
    """

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
    min_input_size: int = 32
    recipe: str = "paper"  # the training recipe it is made for (shiftwise.training.config)


# The Architecture fields that are MacroNet arguments (operator_kwargs merged on their own).
ARCHITECTURE_FIELDS = ("depths", "dims", "kernel_sizes", "block", "operator", "width_factor")
# The largest input side a model takes, in multiples of the side it was made for.
MAX_INPUT_FACTOR = 16


@dataclass(frozen=True)
class ModelFamily:
    """What differs by model family, in one place (never by testing a model's name).

    Attributes:
        name: the family, also the ``--from`` source name of ``shiftwise convert``.
        paper: timm ``pretrained_cfg`` metadata (``paper_name``, ``paper_ids``, ``origin_url``).
        granularity: default sparse-training mask granularity (``"group"``: whole SW pieces).
        paper_recipe: overrides of the paper training recipe's model section (fields of
            ``shiftwise.training.config.ModelConfig``, e.g. SW-T's drop path 0.2).
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


MODEL_CONFIGS: dict[str, Architecture] = {
    "sw_tiny": Architecture(
        (3, 3, 18, 3), (80, 160, 320, 640), PAPER_KERNELS, "shiftwise", "shiftwise", SW_KWARGS,
        paper="ShiftwiseConv (CVPR 2025) SW-T", family="sw",
    ),
    "sw_small": Architecture(
        (3, 3, 27, 3), (96, 192, 384, 768), PAPER_KERNELS, "shiftwise", "shiftwise", SW_KWARGS,
        paper="ShiftwiseConv (CVPR 2025) SW-S", family="sw",
    ),
    "sw_base": Architecture(
        (3, 3, 27, 3), (128, 256, 512, 1024), PAPER_KERNELS, "shiftwise", "shiftwise", SW_KWARGS,
        paper="ShiftwiseConv (CVPR 2025) SW-B", family="sw",
    ),
    "slak_tiny": Architecture(
        (3, 3, 9, 3), (96, 192, 384, 768), PAPER_KERNELS, "convnext", "slak", SLAK_KWARGS, 1.3,
        paper="SLaK (ICLR 2023) SLaK-T", family="slak",
    ),
    "slak_small": Architecture(
        (3, 3, 27, 3), (96, 192, 384, 768), PAPER_KERNELS, "convnext", "slak", SLAK_KWARGS, 1.3,
        paper="SLaK (ICLR 2023) SLaK-S", family="slak",
    ),
    "slak_base": Architecture(
        (3, 3, 27, 3), (128, 256, 512, 1024), PAPER_KERNELS, "convnext", "slak", SLAK_KWARGS, 1.3,
        paper="SLaK (ICLR 2023) SLaK-B", family="slak",
    ),
    "sw_v1_tiny": Architecture(
        (3, 3, 9, 3), (96, 192, 384, 768), SW_V1_KERNELS, "convnext", "shiftwise", SW_V1_KWARGS,
        paper="ShiftwiseConv (CVPR 2025) sparse-sw: SW_v1_slak.py ShiftWise_v1_tiny",
        family="sw",
    ),
    "sw_v1_tiny_1_3x": Architecture(
        (3, 3, 9, 3), (96, 192, 384, 768), SW_V1_KERNELS, "convnext", "shiftwise", SW_V1_KWARGS,
        1.3, paper="ShiftwiseConv (CVPR 2025) sparse-sw: ShiftWise_v1_tiny, width_factor 1.3",
        family="sw",
    ),
    "convnext_tiny": Architecture(
        (3, 3, 9, 3), (96, 192, 384, 768), (7, 7, 7, 7), "convnext", "conv",
        paper="ConvNeXt-T baseline", family="convnext",
    ),
    "sw_atto": Architecture(
        ATTO_DEPTHS, ATTO_DIMS, ATTO_KERNELS, "shiftwise", "shiftwise", SW_KWARGS, input_size=64,
        family="sw", recipe="cpu",
    ),
    "slak_atto": Architecture(
        ATTO_DEPTHS, ATTO_DIMS, ATTO_KERNELS, "convnext", "slak", SLAK_KWARGS, input_size=64,
        family="slak", recipe="cpu",
    ),
    "convnext_atto": Architecture(
        ATTO_DEPTHS, ATTO_DIMS, (7, 7, 7, 7), "convnext", "conv", input_size=64,
        family="convnext", recipe="cpu",
    ),
}  # fmt: skip


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching the shell-style ``pattern``."""
    from fnmatch import fnmatch

    return sorted(name for name in MODEL_CONFIGS if fnmatch(name, pattern))


def get_config(name: str) -> Architecture:
    """The :class:`Architecture` of ``name``; a :class:`UsageError` (a ``ValueError``)
    listing the names if unknown."""
    if name not in MODEL_CONFIGS:
        raise UsageError(f"unknown name {name!r}, expected one of {list_models()}", field="model")
    return MODEL_CONFIGS[name]


def min_input_size(model: str | nn.Module) -> int:
    """The smallest input side (pixels) the registered model ``model`` (a name, or a model
    built by :func:`create_model`) runs on; inputs should be at least this large."""
    if isinstance(model, str):
        return get_config(model).min_input_size
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "min_input_size" not in cfg:
        raise TypeError(f"model: expected a name or a create_model model, got {type(model)}")
    return int(cfg["min_input_size"][-1])


def max_input_size(model: str | nn.Module) -> int:
    """The largest input side (pixels) accepted for ``model`` (a name or a built model):
    ``MAX_INPUT_FACTOR`` times the side it was made for."""
    if isinstance(model, str):
        return MAX_INPUT_FACTOR * get_config(model).input_size
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "input_size" not in cfg:
        raise TypeError(f"model: expected a name or a create_model model, got {type(model)}")
    return MAX_INPUT_FACTOR * int(cfg["input_size"][-1])


def check_image_size(model: str | nn.Module, size: Any, field: str = "image_size") -> int:
    """``size`` if it is an integer input side that ``model`` (a name or a built model)
    accepts, in [:func:`min_input_size`, :func:`max_input_size`]; else one
    :class:`UsageError` naming ``field``."""
    low, high = min_input_size(model), max_input_size(model)
    if isinstance(size, bool) or not isinstance(size, int) or not low <= size <= high:
        name = model if isinstance(model, str) else model.pretrained_cfg["architecture"]
        raise UsageError(
            f"{name} takes inputs of {low} to {high} pixels (it reduces its input {low} "
            f"times; {high} is {MAX_INPUT_FACTOR} times the {high // MAX_INPUT_FACTOR} it was "
            f"made for), got {size!r}",
            field=field,
        )
    return size


def check_model_arguments(
    name: str, device: torch.device | None = None, **kwargs: Any
) -> dict[str, Any]:
    """The :class:`MacroNet` arguments of the registered model ``name`` with ``kwargs``
    (any :data:`~shiftwise.models.arguments.ARGUMENTS`; ``None`` values keep the model's;
    ``operator_kwargs`` merge into the model's when the operator is unchanged), each checked
    and checked together (:func:`~shiftwise.models.arguments.check_network`, memory of
    ``device``). The one validator of model arguments: one :class:`UsageError` whose
    ``field`` is the argument to change."""
    config = get_config(name)
    given = check_arguments({key: value for key, value in kwargs.items() if value is not None})
    arguments = {key: p.default for key, p in inspect.signature(MacroNet).parameters.items()}
    arguments.update({key: getattr(config, key) for key in ARCHITECTURE_FIELDS}, num_classes=1000)
    operator_kwargs = dict(config.operator_kwargs)
    if given.get("operator", config.operator) != config.operator:
        operator_kwargs = {}
    operator_kwargs.update(given.pop("operator_kwargs", {}))
    arguments.update(given, operator_kwargs=operator_kwargs)
    check_network(arguments, device)
    return arguments


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
        "min_input_size": (3, config.min_input_size, config.min_input_size),
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
    arguments = check_model_arguments(
        name,
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
        width_factor=width_factor,
        **kwargs,
    )
    model = MacroNet(**arguments)
    model.pretrained_cfg = model.default_cfg = cfg
    if pretrained:
        load_checkpoint(model, cfg["file"])
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    if features_only:
        return build_features(model, out_indices, feature_cls)
    return model
