"""Training recipes: the papers' ImageNet recipe and a CPU-sized one for the ``*_atto`` models.

``shiftwise train`` starts from :func:`default_recipe` (chosen from the model name, or by
``--recipe``) and every command-line option that is given overrides one field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from shiftwise.errors import UsageError

__all__ = ["RECIPES", "Recipe", "default_recipe"]


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one training run (timm names where timm has one).

    ``lr`` is the peak learning rate for an effective batch of ``lr_base_batch`` samples and is
    scaled linearly with the actual effective batch (``batch_size * accum_steps * world``).
    ``warmup_epochs`` may be fractional; the schedule is stepped once per optimizer step.
    """

    epochs: int
    batch_size: int
    lr: float
    lr_base_batch: int
    weight_decay: float
    warmup_epochs: float
    min_lr: float
    drop_path: float
    smoothing: float
    mixup: float
    cutmix: float
    randaug_n: int
    randaug_m: int
    reprob: float
    crop_scale: float
    hflip: float
    ema_decay: float
    amp: bool
    clip_grad: float

    def replace(self, **changes) -> Recipe:
        """A copy with the non-``None`` values of ``changes`` applied."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# SLaK / ConvNeXt ImageNet recipe (the papers' training settings): 300 epochs, AdamW lr 4e-3 at an
# effective batch of 4096, weight decay 0.05, 20 warm-up epochs, mixup 0.8, cutmix 1.0,
# label smoothing 0.1, RandAugment m9, random erasing 0.25, EMA; drop path 0.1 (0.2 for SW-T).
PAPER = Recipe(
    epochs=300,
    batch_size=128,
    lr=4e-3,
    lr_base_batch=4096,
    weight_decay=0.05,
    warmup_epochs=20,
    min_lr=1e-6,
    drop_path=0.1,
    smoothing=0.1,
    mixup=0.8,
    cutmix=1.0,
    randaug_n=2,
    randaug_m=9,
    reprob=0.25,
    crop_scale=0.08,
    hflip=0.5,
    ema_decay=0.9999,
    amp=True,
    clip_grad=0.0,
)

# A few epochs on 2 CPU cores: higher learning rate, short warm-up, light regularisation, no
# EMA (too few steps for it to settle), no mixing. Geometric augmentation is switched off by
# the data when it would change labels (the bundled set's labels are directions).
CPU = Recipe(
    epochs=6,
    batch_size=64,
    lr=2e-3,
    lr_base_batch=64,
    weight_decay=0.05,
    warmup_epochs=0.5,
    min_lr=1e-5,
    drop_path=0.0,
    smoothing=0.1,
    mixup=0.0,
    cutmix=0.0,
    randaug_n=0,
    randaug_m=9,
    reprob=0.0,
    crop_scale=0.6,
    hflip=0.5,
    ema_decay=0.0,
    amp=False,
    clip_grad=0.0,
)

RECIPES = {"paper": PAPER, "cpu": CPU}


def default_recipe(model: str, name: str | None = None) -> Recipe:
    """``RECIPES[name]`` or, when ``name`` is None, the CPU recipe for ``*_atto`` models and
    the paper recipe otherwise (drop path 0.2 for SW models, as released for SW-T)."""
    if name is not None:
        if name not in RECIPES:
            raise UsageError(f"--recipe must be one of {sorted(RECIPES)}, got {name!r}")
        recipe = RECIPES[name]
    else:
        recipe = CPU if model.endswith("_atto") else PAPER
    from shiftwise.models.registry import MODEL_CONFIGS, model_family

    if recipe is PAPER and model in MODEL_CONFIGS:  # the family's overrides (SW: drop path 0.2)
        recipe = recipe.replace(**model_family(model).paper_recipe)
    return recipe
