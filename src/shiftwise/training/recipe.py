"""Training recipes: named partial configurations (the papers' ImageNet recipe and a CPU-sized
one for the ``*_atto`` models).

A recipe is a mapping ``section -> field -> value`` over the sections of
:class:`~shiftwise.training.config.TrainConfig`; every value the user gives overrides the
recipe's (see :func:`shiftwise.training.config.resolve`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shiftwise.errors import UsageError
from shiftwise.models.registry import MODEL_CONFIGS, model_family

__all__ = ["RECIPES", "PartialConfig", "default_recipe"]

PartialConfig = Mapping[str, Mapping[str, Any]]

# SLaK / ConvNeXt ImageNet recipe (the papers' training settings): 300 epochs, AdamW lr 4e-3 at an
# effective batch of 4096, weight decay 0.05, 20 warm-up epochs, mixup 0.8, cutmix 1.0,
# label smoothing 0.1, RandAugment m9, random erasing 0.25, EMA; drop path 0.1 (0.2 for SW-T).
PAPER: PartialConfig = {
    "model": {"drop_path": 0.1},
    "optim": {
        "epochs": 300,
        "batch_size": 128,
        "lr": 4e-3,
        "lr_base_batch": 4096,
        "weight_decay": 0.05,
        "warmup_epochs": 20,
        "min_lr": 1e-6,
        "ema_decay": 0.9999,
        "amp": True,
        "clip_grad": 0.0,
    },
    "augment": {
        "smoothing": 0.1,
        "mixup": 0.8,
        "cutmix": 1.0,
        "randaug_n": 2,
        "randaug_m": 9,
        "reprob": 0.25,
        "crop_scale": 0.08,
        "hflip": 0.5,
    },
}

# A few epochs on 2 CPU cores: higher learning rate, short warm-up, light regularisation, no
# EMA (too few steps for it to settle), no mixing. Geometric augmentation is switched off by
# the data when it would change labels (the bundled set's labels are directions).
CPU: PartialConfig = {
    "model": {"drop_path": 0.0},
    "optim": {
        "epochs": 6,
        "batch_size": 64,
        "lr": 2e-3,
        "lr_base_batch": 64,
        "weight_decay": 0.05,
        "warmup_epochs": 0.5,
        "min_lr": 1e-5,
        "ema_decay": 0.0,
        "amp": False,
        "clip_grad": 0.0,
    },
    "augment": {
        "smoothing": 0.1,
        "mixup": 0.0,
        "cutmix": 0.0,
        "randaug_n": 0,
        "randaug_m": 9,
        "reprob": 0.0,
        "crop_scale": 0.6,
        "hflip": 0.5,
    },
}

RECIPES: dict[str, PartialConfig] = {"paper": PAPER, "cpu": CPU}


def default_recipe(model: str, name: str | None = None) -> PartialConfig:
    """``RECIPES[name]`` or, when ``name`` is None, the CPU recipe for ``*_atto`` models and
    the paper recipe otherwise; the paper recipe gets the model family's overrides (SW: drop
    path 0.2, as released for SW-T)."""
    if name is not None:
        if name not in RECIPES:
            raise UsageError(f"expected one of {sorted(RECIPES)}, got {name!r}", field="run.recipe")
        recipe = RECIPES[name]
    else:
        recipe = CPU if model.endswith("_atto") else PAPER
    if recipe is PAPER and model in MODEL_CONFIGS:  # the family's overrides (SW: drop path 0.2)
        overrides = model_family(model).paper_recipe
        recipe = {
            section: {**values, **{k: v for k, v in overrides.items() if k in values}}
            for section, values in recipe.items()
        }
    return recipe
