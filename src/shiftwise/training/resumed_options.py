"""Options a resumed run takes from its checkpoint although they do not define the run.

The fields of :data:`~shiftwise.training.config.RUN_FIELDS` define a run (a resume may change
them only when allowed). The options here do not change the weights a run computes but do
shape what it logs or writes (how many validation images its metrics are measured on, when
it checkpoints, when it stops as diverged or on bad data): a resume that is not given them
continues with the checkpoint's values, so its logs equal an uninterrupted run's. Every other
:class:`TrainConfig` field is in :data:`NOT_RESUMED` (where and how a run executes), so each
field is classified exactly once (tested).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from shiftwise.training.config import TrainConfig

__all__ = ["NOT_RESUMED", "RESUMED_OPTIONS", "resumed_options", "saved_options"]

# Option: its value when neither given nor saved.
RESUMED_OPTIONS: dict[str, Any] = {
    "val_limit": None,
    "checkpoint_every": 0,
    "max_skipped_steps": 5,
    "max_bad_images": 0.01,
}
# Where and how a run executes; never taken from a checkpoint ("recipe" only names the
# defaults of the recipe fields, which are run fields).
NOT_RESUMED = (
    "data_dir",
    "output",
    "resume",
    "recipe",
    "workers",
    "device",
    "progress",
    "allow_config_change",
)


def saved_options(config: TrainConfig) -> dict[str, Any]:
    """The :data:`RESUMED_OPTIONS` of ``config`` (resolved by :func:`resumed_options`), as a
    checkpoint stores them."""
    return {name: getattr(config, name) for name in RESUMED_OPTIONS}


def resumed_options(config: TrainConfig, saved: Mapping[str, Any] | None) -> TrainConfig:
    """``config`` with every :data:`RESUMED_OPTIONS` entry not given (``None``) taken from
    ``saved`` (a checkpoint's :func:`saved_options`; ``None`` for a fresh run), else its
    default."""
    saved = saved or {}
    values = {
        name: saved.get(name, default) if getattr(config, name) is None else getattr(config, name)
        for name, default in RESUMED_OPTIONS.items()
    }
    return dataclasses.replace(config, **values)
