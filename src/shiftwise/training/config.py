"""The configuration of a training run: one structured :class:`TrainConfig`.

A :class:`TrainConfig` has six sections (``model``, ``data``, ``optim``, ``augment``,
``sparse``, ``run``); a field set to ``None`` is "not given". Every field carries an
:class:`Option` in its metadata: its flat option name (unique over all sections: the name
:func:`config_from_options` takes and the command line spells ``--option-name``), its help,
its range or choices, its default, whether it defines the run (a resume may change it only
when allowed) and whether a change on resume rebuilds the learning-rate schedule. Validation
(:func:`validate`) and the command line's options are generated from this metadata; errors
name the field (``optim.lr: expected a value > 0, got 0.0``).

:func:`resolve` fills a requested config in: from the defaults and the recipe (a partial
:class:`TrainConfig` of :data:`RECIPES`, chosen by ``run.recipe`` or the model's registry
entry, merged by :func:`merge`) for a fresh run,
from the saved config when resuming, and lists what a resume changes as
:class:`Difference` values.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import typing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shiftwise.data import AugmentConfig
from shiftwise.devices import check_device, check_memory
from shiftwise.errors import UsageError
from shiftwise.models import list_models
from shiftwise.models.arguments import estimate_training_bytes
from shiftwise.models.registry import (
    MODEL_CONFIGS,
    check_image_size,
    check_model_arguments,
    get_config,
    model_family,
)
from shiftwise.options import Option, option
from shiftwise.sparse import GRANULARITIES, GROWTH_MODES, INIT_MODES

__all__ = [
    "CPU",
    "FINETUNE",
    "PAPER",
    "RECIPES",
    "SPARSE_INITS",
    "DataConfig",
    "DeprecatedOptionWarning",
    "Difference",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SparseConfig",
    "TrainConfig",
    "check_output_writable",
    "config_from_dict",
    "config_from_options",
    "config_to_dict",
    "default_recipe",
    "defaults",
    "iter_options",
    "merge",
    "option_paths",
    "reschedules",
    "resolve",
    "validate",
]

# The sparse initialisations a run may ask for ("dense" is the engine's no-op start).
SPARSE_INITS = tuple(mode for mode in INIT_MODES if mode != "dense")
# create_model arguments a run sets itself (from the data, model.width_factor, model.drop_path).
_OWN_MODEL_ARGUMENTS = ("num_classes", "in_chans", "width_factor", "drop_path_rate")


class DeprecatedOptionWarning(DeprecationWarning):
    """A training option given by its former name ``old`` (now ``new``)."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(f"the training option {old!r} is deprecated, use {new!r}")
        self.old, self.new = old, new


@dataclass(frozen=True)
class ModelConfig:
    """The network: a registered model and the :func:`create_model` arguments it gets."""

    name: str | None = option(
        "registered model name", name="model", choices=list_models, default="sw_atto", fixed=True
    )
    width_factor: float | None = option(
        "multiplies every stage width (default: the model's)", low=0, low_open=True, fixed=True
    )
    drop_path: float | None = option(
        "stochastic depth of the last block (paper recipe: 0.2 for sw_* models)",
        low=0,
        high=1,
        high_open=True,
    )
    kwargs: Mapping[str, Any] | None = option(
        'other create_model arguments as JSON, e.g. {"operator_kwargs": {"n_paths": 1}}',
        name="model_kwargs",
        default={},
        fixed=True,
    )
    finetune: str | None = option(
        "weights file, checkpoint.pt or run directory to start from (a new classifier when "
        "its class count differs); never reloaded on resume"
    )
    finetune_weights: str | None = option(
        "the fine-tuning file's weights to start from: the model's or its EMA",
        choices=("model", "ema"),
        default="model",
    )
    head_init_scale: float | None = option(
        "factor on a re-initialised classifier's initial weights (fine-tuning; default 1)",
        low=0,
        default=1.0,
    )


@dataclass(frozen=True)
class DataConfig:
    """The data set and how it is read."""

    name: str | None = option(
        "bundled, fashion-mnist, digits or an ImageFolder root with train/ val/",
        name="data",
        default="bundled",
    )
    data_dir: str | None = option("cache directory of the bundled set", defines_run=False)
    image_size: int | None = option(
        "input side in pixels, at least the model's minimum (default: the data's)", low=1
    )
    train_limit: int | None = option("first N train images", low=1)
    val_limit: int | None = option("first N val images", low=1, defines_run=False, resumed=True)
    workers: int | None = option(
        "DataLoader workers (default: 0 for the built-in sets, 4 otherwise)",
        low=0,
        defines_run=False,
    )
    crop_pct: float | None = option(
        "ImageFolder validation: resize the shorter side to image_size / crop_pct, crop the "
        "centre (default: the model's pretrained_cfg, as shiftwise eval)",
        low=0,
        high=1,
        low_open=True,
        defines_run=False,
        resumed=True,
    )
    max_bad_images: float | None = option(
        "share of unreadable training images skipped (with a warning) before the run stops",
        low=0,
        high=1,
        high_open=True,
        default=0.01,
        defines_run=False,
        resumed=True,
    )


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay per optimizer step, EMA, autocast.

    ``lr`` is the peak learning rate for an effective batch of ``lr_base_batch`` samples and is
    scaled linearly with the actual effective batch (``batch_size * accum_steps * world``).
    """

    epochs: int | None = option("training epochs", low=1, reschedules=True)
    batch_size: int | None = option("images per process and step", low=1, reschedules=True)
    lr: float | None = option(
        "peak learning rate at lr_base_batch images per step",
        low=0,
        low_open=True,
        reschedules=True,
    )
    lr_base_batch: int | None = option(
        "effective batch that lr is given for", low=1, reschedules=True
    )
    weight_decay: float | None = option(
        "AdamW weight decay (>= 2-D weights only)", low=0, reschedules=True
    )
    warmup_epochs: float | None = option(
        "linear warm-up epochs (may be fractional)", low=0, reschedules=True
    )
    min_lr: float | None = option("learning rate at the end of the cosine", low=0, reschedules=True)
    layer_decay: float | None = option(
        "layer-wise lr decay: each layer's rate is this times the next one's, the head's is lr "
        "(1: off)",
        low=0,
        high=1,
        low_open=True,
        default=1.0,
        reschedules=True,
    )
    accum_steps: int | None = option(
        "gradient accumulation steps", low=1, default=1, reschedules=True
    )
    clip_grad: float | None = option("gradient norm clipping (0: off)", low=0)
    ema_decay: float | None = option("weights EMA decay (0: no EMA)", low=0, high=1, high_open=True)
    amp: bool | None = option("bf16 autocast")


@dataclass(frozen=True)
class SparseConfig:
    """Dynamic sparse training (:class:`shiftwise.sparse.Masking`)."""

    enabled: bool | None = option(
        "dynamic sparse training", name="sparse", default=False, fixed=True
    )
    density: float | None = option(
        "kept share of the sparse weights", low=0, high=1, low_open=True, default=0.6
    )
    init: str | None = option(
        "initial layer densities", name="sparse_init", choices=SPARSE_INITS, default="erk"
    )
    growth: str | None = option("how pruned weights regrow", choices=GROWTH_MODES, default="random")
    update_freq: int | None = option("optimizer steps between mask updates", low=1, default=100)
    prune_rate: float | None = option(
        "share pruned and regrown at an update", low=0, high=1, default=0.3
    )
    granularity: str | None = option(
        "mask units (default: group for sw_* models, fine otherwise)",
        choices=GRANULARITIES,
        fixed=True,
    )


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run executes, and what defines it besides the other sections."""

    recipe: str | None = option(
        "base recipe (default: the model's, cpu for *_atto models, paper otherwise)",
        choices=lambda: tuple(sorted(RECIPES)),
        defines_run=False,
    )
    seed: int | None = option(
        "seed of the data order, initialisation and masks", low=0, high=2**63 - 1, default=0
    )
    output: str | None = option("run directory (default runs/...)", defines_run=False)
    resume: str | None = option(
        "run directory (its newest resume point that verifies) or a checkpoint.pt",
        defines_run=False,
    )
    allow_config_change: bool | None = option(
        "let resume change what defines the run (listed in a warning)",
        default=False,
        defines_run=False,
    )
    device: str | None = option("cpu, cuda, cuda:N (default: best)", defines_run=False)
    resume_point_every: int | None = option(
        "also save a resume point every N optimizer steps (0: after each epoch only)",
        deprecated=("checkpoint_every",),
        low=0,
        default=0,
        defines_run=False,
        resumed=True,
    )
    max_skipped_steps: int | None = option(
        "stop as diverged after N consecutive non-finite steps",
        low=1,
        default=5,
        defines_run=False,
        resumed=True,
    )
    progress: bool | None = option("tqdm progress bar", default=True, defines_run=False)
    compile: bool | None = option(
        "torch.compile the training step", default=False, defines_run=False, resumed=True
    )
    channels_last: bool | None = option(
        "channels-last weights and batches", default=False, defines_run=False, resumed=True
    )
    grad_checkpointing: bool | None = option(
        "activation checkpointing of every block (less memory, a second forward)",
        default=False,
        defines_run=False,
        resumed=True,
    )


@dataclass(frozen=True)
class TrainConfig:
    """A training run: requested (``None`` fields: not given) or resolved (:func:`resolve`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ---------------------------------------------------------------------------------------------
# Recipes: named partial configs (``None`` fields: not set by the recipe), merged by merge()

# SLaK / ConvNeXt ImageNet recipe (the papers' training settings): 300 epochs, AdamW lr 4e-3 at an
# effective batch of 4096, weight decay 0.05, 20 warm-up epochs, mixup 0.8, cutmix 1.0,
# label smoothing 0.1, RandAugment m9, random erasing 0.25, EMA; drop path 0.1 (0.2 for SW-T:
# the family's ModelFamily.paper_recipe).
PAPER = TrainConfig(
    model=ModelConfig(drop_path=0.1),
    optim=OptimConfig(
        epochs=300, batch_size=128, lr=4e-3, lr_base_batch=4096, weight_decay=0.05,
        warmup_epochs=20, min_lr=1e-6, ema_decay=0.9999, amp=True, clip_grad=0.0,
    ),
    augment=AugmentConfig(
        smoothing=0.1, mixup=0.8, cutmix=1.0, randaug_n=2, randaug_m=9, reprob=0.25,
        crop_scale=0.08, hflip=0.5,
    ),
)  # fmt: skip

# A few epochs on 2 CPU cores: higher learning rate, short warm-up, light regularisation, no
# EMA (too few steps for it to settle), no mixing. Geometric augmentation is switched off by
# the data when it would change labels (the bundled set's labels are directions).
CPU = TrainConfig(
    model=ModelConfig(drop_path=0.0),
    optim=OptimConfig(
        epochs=6, batch_size=64, lr=2e-3, lr_base_batch=64, weight_decay=0.05,
        warmup_epochs=0.5, min_lr=1e-5, ema_decay=0.0, amp=False, clip_grad=0.0,
    ),
    augment=AugmentConfig(
        smoothing=0.1, mixup=0.0, cutmix=0.0, randaug_n=0, randaug_m=9, reprob=0.0,
        crop_scale=0.6, hflip=0.5,
    ),
)  # fmt: skip

# The official ConvNeXt ImageNet-22k -> 1k fine-tuning settings (facebookresearch/ConvNeXt,
# TRAINING.md, "Fine-tune from ImageNet-22K pre-training", ConvNeXt-B 224x224), for runs started
# with model.finetune: 30 epochs, AdamW lr 5e-5 at an effective batch of 512 (2 nodes x 8 GPUs x
# 32; no lr scaling in their main.py), no warm-up, weight decay 1e-8, layer decay 0.8, head init
# scale 0.001, mixup and cutmix 0, drop path 0.2 (L 0.3, XL 0.4; the 1k -> 384 fine-tunes use
# layer decay 0.7 and drop path 0.8 / 0.95); EMA off (their main.py default; only the XL
# commands add --model_ema true). The rest are their main.py defaults, as in the paper recipe:
# min lr 1e-6, label smoothing 0.1, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25,
# bicubic RandomResizedCrop scale (0.08, 1), flip 0.5, no gradient clipping. The SLaK README
# gives no ImageNet fine-tuning command (its main.py keeps ConvNeXt's --finetune,
# --layer_decay and --head_init_scale). amp follows the paper recipe (bf16 autocast; the
# official default is fp32).
FINETUNE = TrainConfig(
    model=ModelConfig(drop_path=0.2, head_init_scale=0.001),
    optim=OptimConfig(
        epochs=30, batch_size=32, lr=5e-5, lr_base_batch=512, weight_decay=1e-8,
        layer_decay=0.8, warmup_epochs=0, min_lr=1e-6, ema_decay=0.0, amp=True, clip_grad=0.0,
    ),
    augment=AugmentConfig(
        smoothing=0.1, mixup=0.0, cutmix=0.0, randaug_n=2, randaug_m=9, reprob=0.25,
        crop_scale=0.08, hflip=0.5,
    ),
)  # fmt: skip

RECIPES: dict[str, TrainConfig] = {"paper": PAPER, "cpu": CPU, "finetune": FINETUNE}


def default_recipe(model: str, name: str | None = None) -> TrainConfig:
    """The recipe ``name`` (``None``: the one the registered ``model`` is made for, its
    :attr:`~shiftwise.models.registry.Architecture.recipe`), with the model family's overrides
    of the paper recipe (SW: drop path 0.2, as released for SW-T)."""
    if name is None:
        name = get_config(model).recipe if model in MODEL_CONFIGS else "paper"
    if name not in RECIPES:
        raise UsageError(f"expected one of {sorted(RECIPES)}, got {name!r}", field="run.recipe")
    recipe = RECIPES[name]
    if name == "paper" and model in MODEL_CONFIGS:
        recipe = merge(recipe, TrainConfig(model=ModelConfig(**model_family(model).paper_recipe)))
    return recipe


@dataclass(frozen=True)
class Difference:
    """One field a resume changes: ``field`` is its path (``optim.lr``)."""

    field: str
    saved: Any
    requested: Any

    def __str__(self) -> str:
        return f"{self.field}: {self.saved} -> {self.requested}"


# ---------------------------------------------------------------------------------------------
# The fields and their metadata


@dataclass(frozen=True)
class _Field:
    section: str
    name: str
    kind: type  # int, float, bool, str or dict
    option: Option

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def option_name(self) -> str:
        return self.option.name or self.name


def _kind(annotation: Any) -> type:
    base = next(a for a in typing.get_args(annotation) if a is not type(None))
    return dict if typing.get_origin(base) is Mapping else base


def _fields() -> tuple[_Field, ...]:
    found = []
    for section in dataclasses.fields(TrainConfig):
        cls = section.default_factory
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            option = f.metadata["option"]
            found.append(_Field(section.name, f.name, _kind(hints[f.name]), option))
    return tuple(found)


_FIELDS = _fields()
_BY_OPTION = {f.option_name: f for f in _FIELDS}  # unique (tested)
_BY_PATH = {f.path: f for f in _FIELDS}
_DEPRECATED = {old: f for f in _FIELDS for old in f.option.deprecated}


def iter_options() -> Iterator[tuple[str, str, type, Option]]:
    """``(option name, field path, kind, Option)`` of every field, section by section."""
    for f in _FIELDS:
        yield f.option_name, f.path, f.kind, f.option


def option_paths() -> dict[str, str]:
    """Field path -> flat option name (``"optim.lr" -> "lr"``)."""
    return {path: name for name, path, _, _ in iter_options()}


def _get(config: TrainConfig, f: _Field) -> Any:
    return getattr(getattr(config, f.section), f.name)


def _with_values(config: TrainConfig, values: Mapping[str, Mapping[str, Any]]) -> TrainConfig:
    """``config`` with ``values`` (section -> field -> value, ``None`` entries ignored) set."""
    sections = {}
    for name, section_values in values.items():
        given = {k: v for k, v in section_values.items() if v is not None}
        sections[name] = dataclasses.replace(getattr(config, name), **given)
    return dataclasses.replace(config, **sections)


def merge(base: TrainConfig, over: TrainConfig) -> TrainConfig:
    """``base`` with every field ``over`` gives (not ``None``) replaced."""
    return _with_values(base, config_to_dict(over))


def config_to_dict(config: TrainConfig) -> dict[str, dict[str, Any]]:
    """Plain nested values (section -> field -> value), as a resume point stores them."""
    values: dict[str, dict[str, Any]] = {}
    for f in _FIELDS:
        value = _get(config, f)
        values.setdefault(f.section, {})[f.name] = (
            dict(value) if f.kind is dict and value else value
        )
    return values


def config_from_dict(values: Mapping[str, Mapping[str, Any]]) -> TrainConfig:
    """Inverse of :func:`config_to_dict`; unknown sections or fields are a :class:`UsageError`."""
    for section, section_values in values.items():
        for name in section_values:
            if f"{section}.{name}" not in _BY_PATH:
                raise UsageError("not a training config field", field=f"{section}.{name}")
    return _with_values(TrainConfig(), values)


def config_from_options(options: Mapping[str, Any]) -> TrainConfig:
    """The config of flat option names (``{"model": "sw_atto", "lr": 1e-3, "sparse": True}``;
    the command line's option names with underscores), validated.

    Raises a one-line :class:`UsageError` naming an unknown option or a bad value.
    """
    values: dict[str, dict[str, Any]] = {}
    for name, value in options.items():
        if name in _DEPRECATED:
            f = _DEPRECATED[name]
            if f.option_name in options and options[f.option_name] is not None:
                raise UsageError(
                    f"given twice, also by its former name {name!r}; give it once",
                    field=f.path,
                )
            warnings.warn(DeprecatedOptionWarning(name, f.option_name), stacklevel=2)
            name = f.option_name
        if name not in _BY_OPTION:
            raise UsageError(
                f"unknown training option, expected one of {sorted(_BY_OPTION)}", field=name
            )
        f = _BY_OPTION[name]
        values.setdefault(f.section, {})[f.name] = value
    return validate(_with_values(TrainConfig(), values), devices=False)


# ---------------------------------------------------------------------------------------------
# Validation


def _check_value(f: _Field, value: Any) -> Any:
    """``value`` checked against the field's kind, range and choices (ints accepted as floats)."""
    if f.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, f.kind) or (f.kind is int and isinstance(value, bool)):
        raise UsageError(f"expected {f.kind.__name__}, got {value!r}", field=f.path)
    option = f.option
    if f.kind in (int, float) and (option.low is not None or option.high is not None):
        if not option.contains(value):
            expected = option.expected_range(f.kind is int)
            if not math.isfinite(value):
                expected = expected.replace("a value", "a finite value", 1)
            raise UsageError(f"expected {expected}, got {value}", field=f.path)
    elif f.kind is float and not math.isfinite(value):
        raise UsageError(f"expected a finite value, got {value}", field=f.path)
    choices = option.allowed()
    if choices and value not in choices:
        if f.path == "model.name":
            raise UsageError(
                f"unknown model {value!r}, expected one of {list(choices)}", field=f.path
            )
        raise UsageError(f"expected one of {list(choices)}, got {value!r}", field=f.path)
    return value


def _check_model(config: TrainConfig, device: torch.device | None) -> None:
    """The model's arguments (model.kwargs, model.width_factor, model.drop_path) accepted by
    :func:`~shiftwise.models.registry.check_model_arguments`, ``data.image_size`` by
    :func:`~shiftwise.models.registry.check_image_size`, and a training step of
    ``optim.batch_size`` images that fits the memory of ``device`` (when given); errors name
    the field."""
    name = config.model.name or _BY_PATH["model.name"].option.default
    kwargs = dict(config.model.kwargs or {})
    for key in kwargs:
        if key in _OWN_MODEL_ARGUMENTS:
            raise UsageError(
                f"{key!r} is set by the run (data, model.width_factor, model.drop_path), not "
                "by model.kwargs",
                field="model.kwargs",
                also=["model.width_factor", "model.drop_path"],
            )
    own = {"width_factor": config.model.width_factor, "drop_path_rate": config.model.drop_path}
    try:
        arguments = check_model_arguments(name, **kwargs, **own)
    except UsageError as error:
        if error.field == "width_factor" and config.model.width_factor is not None:
            raise UsageError(error.reason, field="model.width_factor") from None
        raise UsageError(f"{error}", field="model.kwargs") from None
    size, batch = config.data.image_size, config.optim.batch_size
    if size is not None:
        check_image_size(name, size, "data.image_size")
    if device is not None and size is not None and batch is not None:
        check_memory(
            estimate_training_bytes(arguments, size, batch),
            f"a training step of {batch} images of {size} px",
            "optim.batch_size",
            device,
            also=["data.image_size"],
        )


def validate(config: TrainConfig, devices: bool = True) -> TrainConfig:
    """Check every value of ``config`` that can be checked without data or a model, and
    return it (ints given for float fields become floats).

    Raises :class:`UsageError` naming the field: a wrong type, an out-of-range number (all
    numbers finite), a value not among the choices (unknown model or recipe...), an image size
    the model does not take, sparse fields without ``sparse.enabled``, model arguments
    (``model.kwargs``, width, drop path) out of the model's bounds or beyond the memory, and
    (``devices``) an unusable device or a training step (``optim.batch_size`` images of
    ``data.image_size``, when both are given) beyond its memory.
    """
    values: dict[str, dict[str, Any]] = {}
    for f in _FIELDS:
        value = _get(config, f)
        if value is not None:
            values.setdefault(f.section, {})[f.name] = _check_value(f, value)
    config = _with_values(config, values)
    if not config.sparse.enabled:
        given = [f.path for f in _FIELDS if f.section == "sparse" and f.name != "enabled"]
        given = [path for path in given if _get(config, _BY_PATH[path]) is not None]
        if given:
            raise UsageError(
                "only applies to sparse training; add sparse.enabled",
                field=given[0],
                also=["sparse.enabled"],
            )
    _check_model(config, check_device(config.run.device, "run.device") if devices else None)
    return config


def check_output_writable(directory: Path, option: str = "run.output") -> None:
    """Create ``directory`` if needed and write and remove a probe file in it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)  # (another rank may be cleaning the directory)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"cannot write to {str(directory)!r} ({reason})", field=option) from None


# ---------------------------------------------------------------------------------------------
# Resolution


def defaults() -> TrainConfig:
    """Every field's :attr:`Option.default` (``None`` where the recipe, model or data decides)."""
    values: dict[str, dict[str, Any]] = {}
    for f in _FIELDS:
        if f.option.default is not None:
            default = f.option.default
            values.setdefault(f.section, {})[f.name] = dict(default) if f.kind is dict else default
    return _with_values(TrainConfig(), values)


def resolve(
    requested: TrainConfig, saved: TrainConfig | None = None
) -> tuple[TrainConfig, list[Difference]]:
    """The run ``requested`` asks for, every field filled in (``None`` only where the model or
    data decides: image size, width factor, granularity...), and what it changes.

    Fresh run: defaults, then the recipe (``run.recipe``, or the model's default), then the
    given fields. Resume: the fields that define the run come from ``saved`` (a resolved
    config), replaced by the named recipe's when ``run.recipe`` is given, then by the given
    fields; the others from the defaults and the given fields. The differences are the
    run-defining fields that differ from ``saved`` (empty for a fresh run); a change of a
    fixed field (model, width, model arguments, sparsity) is refused, and any change unless
    ``run.allow_config_change``, with one :class:`UsageError`.
    """
    base = defaults()
    if saved is not None:
        saved_run: dict[str, dict[str, Any]] = {}
        for f in _FIELDS:
            if f.option.defines_run or f.option.resumed:
                saved_run.setdefault(f.section, {})[f.name] = _get(saved, f)
        base = _with_values(base, saved_run)
    model = requested.model.name or base.model.name
    if saved is None or requested.run.recipe is not None:
        base = merge(base, default_recipe(model, requested.run.recipe))
    resolved = merge(base, requested)
    if resolved.optim.min_lr > resolved.optim.lr:
        raise UsageError(
            f"expected a value <= the learning rate {resolved.optim.lr:g}, "
            f"got {resolved.optim.min_lr:g}",
            field="optim.min_lr",
        )
    differences = []
    if saved is not None:
        for f in _FIELDS:
            old, new = _get(saved, f), _get(resolved, f)
            if f.option.defines_run and old != new:
                differences.append(Difference(f.path, old, new))
    _check_changes(differences, resolved.run.allow_config_change)
    return resolved, differences


def _check_changes(differences: Sequence[Difference], allowed: bool) -> None:
    """Refuse a resume that changes a fixed field, or any run-defining field unless
    ``allowed`` (``run.allow_config_change``)."""
    for difference in differences:
        if _BY_PATH[difference.field].option.fixed:
            raise UsageError(
                f"a resume cannot change it ({difference.saved} -> {difference.requested}): the "
                "saved weights and masks have the saved run's shapes; start a new run instead",
                field=difference.field,
            )
    if differences and not allowed:
        changes = "; ".join(str(d) for d in differences)
        raise UsageError(
            f"the config changes the saved run ({changes}); drop those fields or set "
            "run.allow_config_change",
            field="run.resume",
            also=[*(d.field for d in differences), "run.allow_config_change"],
        )


def reschedules(differences: Sequence[Difference]) -> bool:
    """Whether any of ``differences`` changes the learning-rate schedule."""
    return any(_BY_PATH[d.field].option.reschedules for d in differences)
