"""What a grid will cost, from what was measured on this machine.

A run of ``epochs`` costs ``overhead + epochs * (outside + fixed + (steps + val_batches / 3)
* step)`` seconds: a part paid once per run (model set-up, the study's record), a part paid
once per epoch outside the epoch time the trainer logs (the epoch's checkpoint), and the
logged epoch time: its fixed part (data-loader workers) and its steps (training steps, and
validation batches taken as a third of a step: a forward pass without backward and
optimizer). The logged epoch time alone is what a ``match_time`` entry matches. The costs
come, per run *shape* (the options that define a run, less epochs, seed and
``train_limit``), from:

1. the store's finished runs of that shape: ``step`` from their logged epoch times (the
   epoch's fixed part folded into it), ``overhead`` from their wall time less those;
2. else short probe runs, real :func:`shiftwise.train` runs through the study's own code
   in a temporary directory: one of 1 step to warm up (the first use of a model in a
   process costs more), then one epoch of 1 step, one epoch of 4 steps (fewer where an
   epoch has fewer) and two epochs of 1 step. The line through the one-epoch runs' epoch
   times gives ``step`` (slope) and ``fixed`` (intercept); their wall times less epoch
   times give ``overhead + outside``, and the two-epoch run's gives ``overhead + 2 *
   outside``.

A run already finished in the store costs nothing. The estimate holds for the load the
machine had while it was measured (the 1-minute load average is reported with it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftwise.study.check import EntryPlan
from shiftwise.study.grid import Entry, Grid
from shiftwise.study.store import RESULT_NAME, read_json, read_record

__all__ = ["EntryEstimate", "Estimate", "RunCost", "estimate_grid", "probe_cost", "shape_key"]

_PROBE_STEPS = (1, 4)
_SHAPE_FREE = {"optim.epochs": 1, "run.seed": 0, "data.train_limit": None}


@dataclass(frozen=True)
class RunCost:
    """Seconds of one training step, of an epoch's fixed parts (within and outside its
    logged time) and of a run's fixed part, and where they came from."""

    step: float
    overhead: float
    source: str
    epoch_fixed: float = 0.0
    epoch_outside: float = 0.0

    def epoch_seconds(self, plan: EntryPlan) -> float:
        """The logged time of one epoch of ``plan``: its fixed part, steps and validation
        batches (a third of a step each)."""
        return self.epoch_fixed + (plan.steps + plan.val_batches / 3) * self.step

    def run_seconds(self, plan: EntryPlan, epochs: int) -> float:
        """The wall time of one run of ``plan`` for ``epochs``."""
        return self.overhead + epochs * (self.epoch_outside + self.epoch_seconds(plan))


@dataclass(frozen=True)
class EntryEstimate:
    """An entry's epochs, predicted seconds per run, runs left to train and cost source."""

    epochs: int
    seconds_per_run: float
    runs_left: int
    source: str


@dataclass(frozen=True)
class Estimate:
    """Per entry, and the machine's 1-minute load average and CPU count when measured."""

    entries: dict[str, EntryEstimate]
    load_average: float
    cpus: int

    @property
    def total_seconds(self) -> float:
        """Seconds of the runs left to train."""
        return sum(e.seconds_per_run * e.runs_left for e in self.entries.values())


def shape_key(defining: dict[str, Any]) -> str:
    """The SHA-256 of a run's defining options (``{"section.field": value}``) with epochs,
    seed and ``train_limit`` left out: runs of one shape cost the same per step."""
    shape = {**defining, **_SHAPE_FREE}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


def _finished_costs(store: Path | None, plans_by_shape: dict[str, EntryPlan]) -> dict:
    """Per shape, the :class:`RunCost` measured by the store's finished runs of it."""
    if store is None or not store.is_dir():
        return {}
    measured: dict[str, list[tuple[float, float]]] = {}
    for path in sorted(store.glob(f"*/{RESULT_NAME}")):
        raw = read_json(path, "study")
        record = read_record(path, raw.get("key", "") if isinstance(raw, dict) else "")
        shape = shape_key(record["config"])
        plan = plans_by_shape.get(shape)
        if plan is None:
            continue
        steps = record["images_per_second"] * record["training_seconds"] / record["epochs"]
        per_step = record["training_seconds"] / (
            record["epochs"] * (steps / plan.step_images + plan.val_batches / 3)
        )
        overhead = max(0.0, record["wall_seconds"] - record["training_seconds"])
        measured.setdefault(shape, []).append((per_step, overhead))
    return {
        shape: RunCost(
            sum(s for s, _ in pairs) / len(pairs),
            sum(o for _, o in pairs) / len(pairs),
            f"{len(pairs)} finished runs",
        )
        for shape, pairs in measured.items()
    }


@contextmanager
def _quiet() -> Iterator[None]:
    """The library's info messages off (a probe's training log is not the user's run)."""
    library = logging.getLogger("shiftwise")
    level = library.level
    library.setLevel(logging.WARNING)
    try:
        yield
    finally:
        library.setLevel(level)


def _probe(entry: Entry, plan: EntryPlan) -> RunCost:
    """Time the probe runs of ``entry`` (one validation batch each; see the module)."""
    from shiftwise.study.runner import resolve_run, train_run

    few, many = (min(n, plan.train_images // plan.step_images) for n in _PROBE_STEPS)
    timed = []
    with _quiet(), tempfile.TemporaryDirectory(prefix="shiftwise-probe-") as tmp:
        for n, epochs in [(few, 1), (few, 1), (many, 1), (few, 2)]:
            options = {**entry.options, "train_limit": n * plan.step_images}
            probe = Entry(entry.name, {**options, "val_limit": plan.batch_size}, (0,))
            config, *_ = resolve_run(probe, 0, epochs)
            record = train_run(config, plan, Path(tmp) / f"probe{len(timed)}", resume=False)
            timed.append((n, record["epoch_seconds"], record["wall_seconds"]))
    return probe_cost(*timed[1:])


def probe_cost(
    few: tuple[int, list[float], float],
    many: tuple[int, list[float], float],
    twice: tuple[int, list[float], float],
) -> RunCost:
    """The :class:`RunCost` of three probe runs ``(steps, epoch seconds, wall seconds)``
    with one validation batch each: one epoch of ``few`` steps, one epoch of ``many`` and
    two epochs of ``few``. Every part is clamped at 0; where noise makes the longer epoch
    no slower, or both sizes are equal, the epoch has no fixed part."""
    (n1, (epoch1,), wall1), (n2, (epoch2,), wall2), (_, epochs3, wall3) = few, many, twice
    if n2 > n1 and epoch2 > epoch1:
        step = (epoch2 - epoch1) / (n2 - n1)
        fixed = max(0.0, epoch1 - step * (n1 + 1 / 3))
    else:
        step, fixed = (epoch1 + epoch2) / 2 / (n1 + 1 / 3), 0.0
    one_epoch = ((wall1 - epoch1) + (wall2 - epoch2)) / 2  # overhead + outside
    outside = max(0.0, (wall3 - sum(epochs3)) - one_epoch)
    return RunCost(max(step, 1e-6), max(0.0, one_epoch - outside), "probe", fixed, outside)


def estimate_grid(
    grid: Grid, plans: dict[str, EntryPlan], store: str | os.PathLike | None = None
) -> Estimate:
    """The :class:`Estimate` of ``grid`` (checked into ``plans``) against ``store`` (its
    finished runs are not counted and measure their shapes; ``None``: nothing finished)."""
    from shiftwise.study.runner import _epochs, load_results, resolve_run

    store = None if store is None else Path(store)
    load = os.getloadavg()[0]
    shapes = {}
    for entry in grid.entries:
        _, _, defining, _ = resolve_run(entry, 0, 1)
        shapes[entry.name] = shape_key(defining)
    plans_by_shape = {shapes[name]: plan for name, plan in plans.items()}
    costs: dict[str, RunCost] = _finished_costs(store, plans_by_shape)
    fixed = {name: plan.epochs for name, plan in plans.items()}
    finished = load_results(store, grid, fixed) if store is not None and store.is_dir() else []
    done = {r["run_id"] for r in finished}
    entries: dict[str, EntryEstimate] = {}
    predicted: list[dict[str, Any]] = []  # measured or predicted training times by entry
    for entry in grid.entries:
        plan, shape = plans[entry.name], shapes[entry.name]
        if shape not in costs:
            costs[shape] = _probe(entry, plan)
        cost = costs[shape]
        epochs = _epochs(entry, plan.epochs, finished + predicted)
        assert epochs is not None  # references are earlier entries, measured or predicted
        left = [s for s in entry.seeds if entry.run_id(s) not in done]
        seconds = cost.run_seconds(plan, epochs)
        entries[entry.name] = EntryEstimate(epochs, seconds, len(left), cost.source)
        training = epochs * cost.epoch_seconds(plan)
        predicted += [
            {"entry": entry.name, "epochs": epochs, "training_seconds": training} for _ in left
        ]
    return Estimate(entries, load, os.cpu_count() or 1)
