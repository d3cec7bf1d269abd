"""Check every entry of a grid before anything trains.

:func:`check_grid` turns each entry's options into a :class:`~shiftwise.training.TrainConfig`,
validates it (device included), loads its data and builds its model, so that an unknown
model, a bad option, an unusable device or missing data fails at once with one line naming
the entry.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from shiftwise.errors import UsageError
from shiftwise.study.grid import Entry, Grid

__all__ = ["MAX_MODULES", "EntryPlan", "check_grid"]

# Layers (modules) a grid's model may have: the largest registered models have under 700,
# so this refuses runaway architecture arguments (depths, paths) while they are built.
MAX_MODULES = 10_000


@dataclass
class EntryPlan:
    """What one checked entry trains: its model (built, untrained) and its data's sizes.

    ``epochs`` is ``None`` for a ``match_time`` entry (known once its references ran);
    ``train_images`` are the images one epoch trains on (whole steps), ``val_images`` those
    evaluated after each epoch.
    """

    entry: Entry
    model_name: str
    model: nn.Module
    data: str
    epochs: int | None
    image_size: int
    in_chans: int
    batch_size: int
    step_images: int
    train_images: int
    val_images: int

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch."""
        return self.train_images // self.step_images

    @property
    def val_batches(self) -> int:
        """Validation batches per epoch."""
        return math.ceil(self.val_images / self.batch_size)


@contextmanager
def _module_limit(limit: int) -> Iterator[None]:
    """Refuse, while a model is built, its ``limit + 1``-th registered submodule."""
    count = 0

    def hook(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
        nonlocal count
        count += 1
        if count > limit:
            raise UsageError(
                f"model_kwargs: the model would have more than {limit} layers "
                "(the largest registered models have under 700)"
            )

    handle = torch.nn.modules.module.register_module_module_registration_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _check_entry(grid: Grid, entry: Entry, data_cache: dict) -> EntryPlan:
    from shiftwise.data import load_data
    from shiftwise.models import create_model
    from shiftwise.training.config import check_device, config_from_options, resolve

    config, _ = resolve(config_from_options(entry.options))
    check_device(config.run.device, "device")
    data = config.data
    key = (data.name, data.image_size, data.data_dir)
    if key not in data_cache:
        data_cache[key] = load_data(data.name, image_size=data.image_size, data_dir=data.data_dir)
    bundle = data_cache[key]
    randaug = config.augment.randaug_n if bundle.geometric_aug else 0
    in_chans = 3 if randaug > 0 else bundle.in_chans
    kwargs = dict(config.model.kwargs)
    if config.model.width_factor is not None:
        kwargs["width_factor"] = config.model.width_factor
    with _module_limit(MAX_MODULES):
        model = create_model(
            config.model.name, num_classes=bundle.num_classes, in_chans=in_chans, **kwargs
        )
    batch = config.optim.batch_size * config.optim.accum_steps
    limit = data.train_limit
    train = len(bundle.train) if limit is None else min(limit, len(bundle.train))
    if train // batch < 1:
        raise UsageError(
            f"optim.batch_size: {train} training images cannot fill one step of {batch}"
        )
    val = len(bundle.val) if data.val_limit is None else min(data.val_limit, len(bundle.val))
    return EntryPlan(
        entry=entry,
        model_name=config.model.name,
        model=model,
        data=bundle.name,
        epochs=None if entry.match_time is not None else config.optim.epochs,
        image_size=bundle.image_size,
        in_chans=in_chans,
        batch_size=config.optim.batch_size,
        step_images=batch,
        train_images=train // batch * batch,
        val_images=val,
    )


def check_grid(grid: Grid) -> dict[str, EntryPlan]:
    """The :class:`EntryPlan` of every entry, by name; raises :class:`UsageError` as
    ``grid 'NAME' entry 'ENTRY': <what is wrong>`` at the first bad entry."""
    data_cache: dict = {}
    plans = {}
    for entry in grid.entries:
        try:
            plans[entry.name] = _check_entry(grid, entry, data_cache)
        except (UsageError, TypeError, ValueError) as error:
            message = " ".join(str(error).split())
            raise UsageError(f"grid {grid.name!r} entry {entry.name!r}: {message}") from None
    return plans
