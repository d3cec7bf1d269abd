"""Check every entry of a grid before anything trains, and estimate what the grid costs.

:func:`check_grid` turns each entry's options into a :class:`~shiftwise.training.TrainConfig`,
validates it, loads its data and builds its model, so that an unknown model, a bad option or
missing data fails at once with one line naming the entry. :func:`estimate_seconds` times a
few training steps of each entry's model on random data to predict the grid's wall time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shiftwise.errors import UsageError
from shiftwise.study.grid import Entry, Grid, matched_epochs

__all__ = ["EntryPlan", "check_grid", "estimate_seconds", "measure_step_seconds"]


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
    train_images: int
    val_images: int


def _check_entry(grid: Grid, entry: Entry, data_cache: dict) -> EntryPlan:
    from shiftwise.data import load_data
    from shiftwise.models import create_model
    from shiftwise.training.config import config_from_options, resolve

    config, _ = resolve(config_from_options(entry.options))
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
            named = [error.field] if getattr(error, "field", None) else []
            raise UsageError(
                f"grid {grid.name!r} entry {entry.name!r}: {message}", also=named
            ) from None
    return plans


def measure_step_seconds(plan: EntryPlan, steps: int = 3) -> float:
    """The fastest of ``steps`` training steps (forward, backward, AdamW) of ``plan``'s model
    on a random batch ``[batch_size, in_chans, image_size, image_size]``, after one warm-up
    step (the minimum: other processes on the machine only ever add time)."""
    model = plan.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(plan.batch_size, plan.in_chans, plan.image_size, plan.image_size)
    labels = torch.zeros(plan.batch_size, dtype=torch.long)
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    return min(times[1:])


def estimate_seconds(grid: Grid, plans: dict[str, EntryPlan]) -> dict[str, tuple[int, float]]:
    """``{entry: (epochs, seconds per run)}`` predicted from a timed step per entry:
    an epoch is its training steps plus validation (a forward pass taken as a third of a
    step); ``match_time`` entries get the epochs :func:`matched_epochs` gives on these
    predictions. A rough guide: setup and data loading are not counted."""
    epoch_seconds = {}
    for name, plan in plans.items():
        step = measure_step_seconds(plan)
        val_steps = math.ceil(plan.val_images / plan.batch_size)
        epoch_seconds[name] = (plan.train_images / plan.batch_size + val_steps / 3) * step
    estimates: dict[str, tuple[int, float]] = {}
    for entry in grid.entries:
        epochs = plans[entry.name].epochs
        if entry.match_time is not None:
            target = estimates[entry.match_time.of][1]
            epochs = matched_epochs([target], [epoch_seconds[entry.match_time.per_epoch]])
        estimates[entry.name] = (epochs, epochs * epoch_seconds[entry.name])
    return estimates
