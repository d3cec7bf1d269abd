"""The configuration of a training run: :class:`TrainConfig`, its validation and resolution.

A :class:`TrainConfig` holds what the user asked for (``None``: not given). :func:`validate`
checks every value before any data is read or model built; :func:`resolve` turns it into the
:class:`RunSpec` that defines the run (the recipe filled in from the model's default recipe,
or, when resuming, from the checkpoint's run) and lists what a resumed run would change.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shiftwise.errors import UsageError
from shiftwise.training.recipe import RECIPES, Recipe, default_recipe

__all__ = [
    "MIN_IMAGE_SIZE",
    "RECIPE_FIELDS",
    "SPARSE_OPTIONS",
    "RunSpec",
    "TrainConfig",
    "check_device",
    "check_output_writable",
    "config_from_options",
    "flag",
    "resolve",
    "validate",
]

# Every registered model reduces its input 32 times (stride-4 stem, three stride-2 stages).
MIN_IMAGE_SIZE = 32
DEFAULT_MODEL = "sw_atto"
DEFAULT_DATA = "bundled"
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name != "lr_base_batch")
SPARSE_OPTIONS = ("density", "sparse_init", "growth", "update_freq", "prune_rate", "granularity")


def flag(name: str) -> str:
    """The command-line option of the :class:`TrainConfig` field ``name``."""
    return f"--{name.replace('_', '-')}"


@dataclass
class TrainConfig:
    """A training run as requested; ``None`` means "not given" (a default, or when resuming,
    the checkpoint's value). Field ``x_y`` is the command-line option ``--x-y``.

    Recipe fields (``epochs`` ... ``clip_grad``, ``amp``) override the chosen ``recipe``
    (default: the CPU recipe for ``*_atto`` models, the papers' otherwise).
    ``max_skipped_steps``: consecutive optimizer steps skipped for a non-finite loss or
    gradient before the run stops as diverged. ``max_bad_images``: share of unreadable
    training images tolerated (skipped with a warning) before the run stops.
    ``allow_config_change``: let ``resume`` change what defines the run.
    ``model_kwargs``: extra :func:`~shiftwise.models.create_model` arguments (e.g.
    ``{"operator_kwargs": {"n_paths": 1}}``), recorded in the weights' metadata.
    """

    model: str | None = None
    data: str | None = None
    data_dir: str | None = None
    image_size: int | None = None
    output: str | None = None
    resume: str | None = None
    recipe: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    min_lr: float | None = None
    drop_path: float | None = None
    smoothing: float | None = None
    mixup: float | None = None
    cutmix: float | None = None
    randaug_n: int | None = None
    randaug_m: int | None = None
    reprob: float | None = None
    crop_scale: float | None = None
    hflip: float | None = None
    ema_decay: float | None = None
    clip_grad: float | None = None
    amp: bool | None = None
    accum_steps: int | None = None
    width_factor: float | None = None
    model_kwargs: dict[str, Any] | None = None
    seed: int | None = None
    train_limit: int | None = None
    sparse: bool | None = None
    density: float | None = None
    sparse_init: str | None = None
    growth: str | None = None
    update_freq: int | None = None
    prune_rate: float | None = None
    granularity: str | None = None
    val_limit: int | None = None
    workers: int | None = None
    device: str | None = None
    checkpoint_every: int = 0
    progress: bool = True
    max_skipped_steps: int = 5
    max_bad_images: float = 0.01
    allow_config_change: bool = False


# Fields that define the run: a resumed run may change them only with allow_config_change.
RUN_FIELDS = (
    "model",
    "data",
    "image_size",
    "width_factor",
    "model_kwargs",
    "accum_steps",
    "seed",
    "train_limit",
    "sparse",
    *SPARSE_OPTIONS,
    *RECIPE_FIELDS,
)


@dataclass
class RunSpec:
    """The resolved definition of a run (what a checkpoint records and a resume compares)."""

    model: str
    data: str
    image_size: int | None
    width_factor: float | None
    accum_steps: int
    seed: int
    train_limit: int | None
    sparse: bool
    density: float
    sparse_init: str
    growth: str
    update_freq: int
    prune_rate: float
    granularity: str | None
    recipe: Recipe
    changes: list[str] = field(default_factory=list)
    model_kwargs: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain values (the recipe as a dict), as stored in a checkpoint."""
        values = dataclasses.asdict(self)
        values.pop("changes")
        return values


_RANGES: dict[str, tuple[float, float, bool]] = {
    # name: (low, high, high is exclusive)
    "epochs": (1, math.inf, False),
    "batch_size": (1, math.inf, False),
    "lr": (0, math.inf, False),
    "weight_decay": (0, math.inf, False),
    "warmup_epochs": (0, math.inf, False),
    "min_lr": (0, math.inf, False),
    "drop_path": (0, 1, True),
    "smoothing": (0, 1, True),
    "mixup": (0, math.inf, False),
    "cutmix": (0, math.inf, False),
    "randaug_n": (0, math.inf, False),
    "randaug_m": (0, 30, False),
    "reprob": (0, 1, False),
    "crop_scale": (0, 1, False),
    "hflip": (0, 1, False),
    "ema_decay": (0, 1, True),
    "clip_grad": (0, math.inf, False),
    "accum_steps": (1, math.inf, False),
    "width_factor": (0, math.inf, False),
    "train_limit": (1, math.inf, False),
    "val_limit": (1, math.inf, False),
    "workers": (0, math.inf, False),
    "checkpoint_every": (0, math.inf, False),
    "density": (0, 1, False),
    "update_freq": (1, math.inf, False),
    "prune_rate": (0, 1, False),
    "max_skipped_steps": (1, math.inf, False),
    "max_bad_images": (0, 1, True),
}
# create_model arguments that have their own option (or come from the data).
_OWN_MODEL_ARGUMENTS = ("num_classes", "in_chans", "width_factor", "drop_path_rate")
_POSITIVE = ("lr", "width_factor", "density", "crop_scale")  # 0 excluded
_CHOICES = {
    "sparse_init": ("erk", "snip", "uniform"),
    "growth": ("random", "gradient"),
    "granularity": ("fine", "group"),
}


def _check_range(name: str, value: float) -> None:
    low, high, exclusive = _RANGES[name]
    positive = name in _POSITIVE
    inside = (value > low if positive else value >= low) and (
        value < high if exclusive else value <= high
    )
    if inside:
        return
    if high == math.inf:
        kind = "an integer" if isinstance(value, int) else "a value"
        expected = f"{kind} {'>' if positive else '>='} {low:g}"
    else:
        expected = (
            f"a value in {'(' if positive else '['}{low:g}, {high:g}{')' if exclusive else ']'}"
        )
    raise UsageError(f"{flag(name)}: expected {expected}, got {value}")


def validate(config: TrainConfig) -> None:
    """Check every value of ``config`` that can be checked without data or a model.

    Raises :class:`UsageError` naming the option: unknown model or recipe, out-of-range
    numbers (epochs and batch size >= 1, smoothing in [0, 1), ...), image size below
    :data:`MIN_IMAGE_SIZE`, sparse options without ``--sparse``, an unusable device.
    """
    from shiftwise.models import list_models

    if config.model is not None and config.model not in list_models():
        raise UsageError(
            f"--model: unknown model {config.model!r}, expected one of {list_models()}"
        )
    if config.recipe is not None and config.recipe not in RECIPES:
        raise UsageError(f"--recipe: expected one of {sorted(RECIPES)}, got {config.recipe!r}")
    for name in _RANGES:
        value = getattr(config, name)
        if value is not None:
            _check_range(name, value)
    if config.image_size is not None and config.image_size < MIN_IMAGE_SIZE:
        raise UsageError(
            f"--image-size: the models reduce their input {MIN_IMAGE_SIZE} times, expected "
            f"at least {MIN_IMAGE_SIZE}, got {config.image_size}"
        )
    for name, choices in _CHOICES.items():
        value = getattr(config, name)
        if value is not None and value not in choices:
            raise UsageError(f"{flag(name)}: expected one of {list(choices)}, got {value!r}")
    if not config.sparse:
        given = [flag(name) for name in SPARSE_OPTIONS if getattr(config, name) is not None]
        if given:
            raise UsageError(f"{given[0]}: only applies to sparse training; add --sparse")
    if config.model_kwargs is not None:
        if not isinstance(config.model_kwargs, dict):
            raise UsageError(
                f"model_kwargs: expected a table of create_model arguments, got "
                f"{config.model_kwargs!r}"
            )
        for name in _OWN_MODEL_ARGUMENTS:
            if name in config.model_kwargs:
                raise UsageError(f"model_kwargs: {name!r} is set by its own option or the data")
    check_device(config.device)


def config_from_options(options: Mapping[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of flat ``options`` (its field names as keys).

    Raises :class:`UsageError` naming the first unknown option or a value of the wrong type
    (ranges are checked by :func:`validate`).
    """
    kinds = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    for name, value in options.items():
        if name not in kinds:
            raise UsageError(f"{name}: unknown training option, expected one of {sorted(kinds)}")
        kind = kinds[name]
        expected = next(t for t in ("bool", "int", "float", "str", "dict") if kind.startswith(t))
        accepted = {"bool": bool, "int": int, "float": int | float, "str": str, "dict": dict}
        wrong = isinstance(value, bool) and expected != "bool"
        if value is not None and (wrong or not isinstance(value, accepted[expected])):
            raise UsageError(f"{name}: expected {expected}, got {value!r}")
    return TrainConfig(**options)


def check_device(name: str | None, option: str = "--device") -> torch.device:
    """The device ``name`` (default: CUDA when available, else CPU), checked to exist."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(
            f"{option}: {name!r} is not a device, expected cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{option}: {name!r} asked for CUDA, but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"{option}: {name!r} does not exist ({torch.cuda.device_count()} CUDA devices)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{option}: {name!r} asked for MPS, which is not available")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"{option}: {name!r} is not supported, expected cpu, cuda or cuda:N")
    return device


def check_output_writable(directory: Path, option: str = "--output") -> None:
    """Create ``directory`` if needed and write and remove a probe file in it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)  # (another rank may be cleaning the directory)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"{option}: cannot write to {str(directory)!r} ({reason})") from None


def resolve(config: TrainConfig, saved: dict[str, Any] | None = None) -> RunSpec:
    """The run ``config`` asks for; when resuming, ``saved`` (a checkpoint's
    :meth:`RunSpec.as_dict`) supplies every value not given, and the given values that differ
    from it are listed in ``changes`` as ``"--option: saved -> new"``."""
    if saved is None:
        model = config.model or DEFAULT_MODEL
        base = default_recipe(model, config.recipe)
        values: dict[str, Any] = {
            "model": model,
            "data": config.data or DEFAULT_DATA,
            "image_size": None,
            "width_factor": None,
            "accum_steps": 1,
            "seed": 0,
            "train_limit": None,
            "sparse": False,
            "density": 0.6,
            "sparse_init": "erk",
            "growth": "random",
            "update_freq": 100,
            "prune_rate": 0.3,
            "granularity": None,
            "model_kwargs": None,
        }
    else:
        values = {k: v for k, v in saved.items() if k != "recipe"}
        values.setdefault("model_kwargs", None)  # checkpoints written before the option
        base = Recipe(**saved["recipe"])
        if config.recipe is not None:
            base = default_recipe(config.model or values["model"], config.recipe)
    recipe = base.replace(**{name: getattr(config, name) for name in RECIPE_FIELDS})
    saved_recipe = base if saved is None else Recipe(**saved["recipe"])
    changes = []
    for name in RUN_FIELDS:
        if name in RECIPE_FIELDS:
            old, new = getattr(saved_recipe, name), getattr(recipe, name)
        else:
            given = getattr(config, name)
            old = values[name]
            new = old if given is None else given
            values[name] = new
        if saved is not None and new != old:
            changes.append(f"{flag(name)}: {old} -> {new}")
    return RunSpec(**values, recipe=recipe, changes=changes)
