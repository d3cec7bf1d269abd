"""Run a grid: one ordinary :func:`shiftwise.train` run per entry and seed, one at a time.

A study directory holds ``study.json`` (the grid it runs), ``runs/<entry>-seed<N>/`` (each a
normal run directory) and the summary files. A run is finished when its ``study-run.json``
exists; that file is written last and atomically, so a finished run is never repeated and a
run killed before it resumes from its newest checkpoint (the trainer's ``resume``). A lock
keeps a second study process out of the same directory.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftwise.errors import UsageError
from shiftwise.io import PREVIOUS_NAME, STATE_NAME, atomic_write
from shiftwise.study.check import EntryPlan, check_grid
from shiftwise.study.grid import Entry, Grid, matched_epochs

__all__ = ["RESULT_NAME", "STUDY_NAME", "Progress", "grid_record", "load_results", "run_study"]

logger = logging.getLogger(__name__)

RESULT_NAME = "study-run.json"
STUDY_NAME = "study.json"
_LOCK_NAME = ".study.lock"


@dataclass(frozen=True)
class Progress:
    """Where a study stands: runs finished (``skipped`` of them found finished on disk) of
    ``total``, the run about to start (``None`` at the end) and the predicted seconds left
    (``None`` until one run has been timed)."""

    done: int
    total: int
    skipped: int
    run_id: str | None
    eta_seconds: float | None


def grid_record(grid: Grid) -> dict[str, Any]:
    """The grid as plain JSON values (what ``study.json`` stores)."""
    return json.loads(json.dumps(dataclasses.asdict(grid)))


@contextmanager
def _study_directory(output: Path, grid: Grid) -> Iterator[None]:
    """Own and lock ``output``: a new or empty directory, or one holding this grid's study."""
    record = grid_record(grid)
    study_file = output / STUDY_NAME
    if study_file.is_file():
        if json.loads(study_file.read_text()) != record:
            raise UsageError(
                f"output: {str(output)!r} holds a study of another grid "
                f"(its {STUDY_NAME} differs); choose another --output"
            )
    elif output.exists() and any(path.name != _LOCK_NAME for path in output.iterdir()):
        raise UsageError(f"output: {str(output)!r} is not empty and holds no {STUDY_NAME}")
    output.mkdir(parents=True, exist_ok=True)
    with open(output / _LOCK_NAME, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"output: another shiftwise study is running in {str(output)!r}"
            ) from None
        if not study_file.is_file():
            atomic_write(study_file, json.dumps(record, indent=1).encode())
        yield


def load_results(output: Path, grid: Grid) -> list[dict[str, Any]]:
    """The ``study-run.json`` records of the grid's finished runs, in grid order."""
    results = []
    for entry, seed in grid.runs():
        path = output / "runs" / entry.run_id(seed) / RESULT_NAME
        if path.is_file():
            results.append(json.loads(path.read_text()))
    return results


def _epochs(entry: Entry, plan: EntryPlan, results: list[dict[str, Any]]) -> int:
    """The entry's epochs; for ``match_time``, from the finished runs it refers to."""
    if entry.match_time is None:
        return plan.epochs
    target = [r["training_seconds"] for r in results if r["entry"] == entry.match_time.of]
    per_epoch = [
        r["training_seconds"] / r["epochs"]
        for r in results
        if r["entry"] == entry.match_time.per_epoch
    ]
    return matched_epochs(target, per_epoch)


def _has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / name).is_file() for name in (STATE_NAME, PREVIOUS_NAME))


def _run_record(
    entry: Entry, seed: int, plan: EntryPlan, run_dir: Path, result: Any, wall: float
) -> dict[str, Any]:
    """The finished run's record: metrics, times, the trained model's size and, for sparse
    ShiftWiseConv models, the active pieces per stage (SW Table 2)."""
    from shiftwise.analysis.complexity import model_complexity
    from shiftwise.models.weights import model_from_weights
    from shiftwise.sparse.report import sparsity_report

    log = json.loads((run_dir / "log.json").read_text())
    sparse = bool(entry.options.get("sparse"))
    model, _ = model_from_weights(result.weights, flag="study")
    size = (plan.image_size, plan.image_size)
    total = model_complexity(model, size, nonzero=sparse, in_chans=plan.in_chans)[-1]
    stages = [dataclasses.asdict(s) for s in sparsity_report(model).stages] if sparse else []
    training_seconds = sum(record["time"] for record in log)
    return {
        "run_id": entry.run_id(seed),
        "entry": entry.name,
        "seed": seed,
        "model": plan.model_name,
        "data": plan.data,
        "epochs": result.epochs,
        "top1": result.top1,
        "top5": result.top5,
        "chance": result.chance,
        "training_seconds": training_seconds,
        "images_per_second": result.epochs * plan.train_images / training_seconds,
        "wall_seconds": wall,
        "params": total.params,
        "macs": total.macs,
        "val_top1": [record["val_top1"] for record in log],
        "epoch_seconds": [record["time"] for record in log],
        "stages": stages,
    }


def _eta(
    plans: dict[str, EntryPlan], results: list[dict[str, Any]], left: list[tuple[Entry, int]]
) -> float | None:
    """Seconds the runs ``left`` should take: per run, the mean wall time of its entry's
    finished runs, else the mean wall time per epoch of all finished runs times its epochs
    (a ``match_time`` entry not yet resolved: its target's mean)."""
    if not results:
        return None
    per_epoch = sum(r["wall_seconds"] / r["epochs"] for r in results) / len(results)

    def mean_wall(name: str) -> float | None:
        walls = [r["wall_seconds"] for r in results if r["entry"] == name]
        return sum(walls) / len(walls) if walls else None

    total = 0.0
    for entry, _ in left:
        known = mean_wall(entry.name)
        if known is None and entry.match_time is not None:
            known = mean_wall(entry.match_time.of)
        if known is None:
            known = per_epoch * (plans[entry.name].epochs or 1)
        total += known
    return total


def run_study(
    grid: Grid,
    output: str | os.PathLike,
    on_progress: Callable[[Progress], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every run of ``grid`` not yet finished in ``output``; returns all run records.

    Every entry is checked first (:func:`~shiftwise.study.check_grid`). ``on_progress`` is
    called before each run and once at the end.
    """
    from shiftwise.training import train
    from shiftwise.training.config import config_from_options

    plans = check_grid(grid)
    output = Path(output)
    with _study_directory(output, grid):
        runs = grid.runs()
        results = load_results(output, grid)
        finished = {r["run_id"] for r in results}
        skipped = len(finished)
        todo = [(entry, seed) for entry, seed in runs if entry.run_id(seed) not in finished]
        logger.info(
            "study %s: %d runs, %d finished, %d to run", grid.name, len(runs), skipped, len(todo)
        )
        for index, (entry, seed) in enumerate(todo):
            run_id, run_dir = entry.run_id(seed), output / "runs" / entry.run_id(seed)
            if on_progress is not None:
                eta = _eta(plans, results, todo[index:])
                on_progress(Progress(skipped + index, len(runs), skipped, run_id, eta))
            epochs = _epochs(entry, plans[entry.name], results)
            options = {
                **entry.options,
                "epochs": epochs,
                "seed": seed,
                "output": str(run_dir),
                "resume": str(run_dir) if _has_checkpoint(run_dir) else None,
                "progress": False,
            }
            logger.info(
                "study %s: run %s (%d epochs)%s",
                grid.name,
                run_id,
                epochs,
                " resumed" if options["resume"] else "",
            )
            started = time.perf_counter()
            result = train(config_from_options(options))
            wall = time.perf_counter() - started
            record = _run_record(entry, seed, plans[entry.name], run_dir, result, wall)
            atomic_write(run_dir / RESULT_NAME, json.dumps(record, indent=1).encode())
            results = load_results(output, grid)
        if on_progress is not None:
            on_progress(Progress(len(runs), len(runs), skipped, None, 0.0))
    return results
