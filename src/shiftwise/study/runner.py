"""Run a grid: one ordinary :func:`shiftwise.train` run per entry and seed, one at a time.

A study directory holds ``study.json`` (the grid it runs) and the summary files; the runs
live in a run store (:mod:`shiftwise.study.store`; by default ``<output>/runs``), each a
normal run directory keyed by the options that define it, so a run that two entries or two
grids share trains once. A run is finished when its ``study-run.json`` exists; that file is
written last and atomically, so a finished run is never repeated and a run killed before it
resumes from its newest checkpoint (the trainer's ``resume``). Locks keep a second study
process out of the same study directory and the same store.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftwise.errors import UsageError
from shiftwise.io import PREVIOUS_NAME, STATE_NAME, atomic_write, os_error_reason
from shiftwise.study.check import EntryPlan, check_grid
from shiftwise.study.grid import Entry, Grid, matched_epochs
from shiftwise.study.store import (
    RESULT_NAME,
    STORE_MARKER,
    read_json,
    read_record,
    record_bytes,
    run_dirname,
    run_key,
)

__all__ = [
    "RESULT_NAME",
    "STUDY_NAME",
    "Progress",
    "grid_record",
    "load_results",
    "resolve_run",
    "run_study",
    "train_run",
]

logger = logging.getLogger(__name__)

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


def _make_directory(path: Path, option: str) -> None:
    """Create directory ``path`` (and its parents); one line if it cannot be one."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option}: {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"{option}: cannot create the directory {str(path)!r} ({os_error_reason(error)})"
        ) from None


@contextmanager
def _locked(directory: Path, option: str) -> Iterator[None]:
    """Hold the exclusive lock ``directory/.study.lock``: a regular file opened without
    following a link and without blocking (a FIFO or device in its place is refused)."""
    path = directory / _LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        raise UsageError(
            f"{option}: cannot open the lock {str(path)!r} ({os_error_reason(error)}); "
            "expected a regular file"
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{option}: the lock {str(path)!r} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{option}: another shiftwise study is running in {str(directory)!r}"
            ) from None
        yield
    finally:
        os.close(fd)


def _check_output(output: Path, record: dict[str, Any]) -> bool:
    """Whether ``output`` already holds this grid's ``study.json``; refuses a directory that
    holds another grid's study, a damaged one, or files shiftwise did not write."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"output: {str(output)!r} exists and is not a directory")
    study_file = output / STUDY_NAME
    if study_file.exists() or study_file.is_symlink():
        if read_json(study_file, "output") != record:
            raise UsageError(
                f"output: {str(output)!r} holds a study of another grid "
                f"(its {STUDY_NAME} differs); choose another --output"
            )
        return True
    if output.exists() and any(path.name != _LOCK_NAME for path in output.iterdir()):
        raise UsageError(f"output: {str(output)!r} is not empty and holds no {STUDY_NAME}")
    return False


def _check_store(store: Path) -> None:
    """Refuse a store that is not a directory, or a non-empty one shiftwise did not make."""
    if store.exists() and not store.is_dir():
        raise UsageError(f"store: {str(store)!r} exists and is not a directory")
    ours = (store / STORE_MARKER).is_file()
    if store.is_dir() and not ours and any(p.name != _LOCK_NAME for p in store.iterdir()):
        raise UsageError(
            f"store: {str(store)!r} is not empty and is not a shiftwise run store "
            f"(no {STORE_MARKER})"
        )


@contextmanager
def _study_directory(output: Path, store: Path, grid: Grid) -> Iterator[None]:
    """Own and lock ``output`` (a new or empty directory, or one holding this grid's study)
    and ``store`` (a new or empty directory, or a run store)."""
    record = grid_record(grid)
    _check_output(output, record)
    _check_store(store)
    with ExitStack() as stack:
        _make_directory(output, "output")
        stack.enter_context(_locked(output, "output"))
        if not _check_output(output, record):
            atomic_write(output / STUDY_NAME, json.dumps(record, indent=1).encode())
        _make_directory(store, "store")
        if store.resolve() != output.resolve():
            stack.enter_context(_locked(store, "store"))
        _check_store(store)
        if not (store / STORE_MARKER).is_file():
            atomic_write(store / STORE_MARKER, b"a shiftwise study run store\n")
        yield


def resolve_run(entry: Entry, seed: int, epochs: int) -> tuple[Any, str, dict[str, Any], str]:
    """``(config, key, defining options, directory name)`` of ``entry``'s run with ``seed``
    and ``epochs``: the config as requested (what :func:`shiftwise.train` is given) and the
    key of its resolved options (see :func:`shiftwise.study.store.run_key`)."""
    from shiftwise.training.config import config_from_options, resolve

    config = config_from_options({**entry.options, "epochs": epochs, "seed": seed})
    resolved, _ = resolve(config)
    key, defining = run_key(resolved)
    name = run_dirname(resolved.model.name, resolved.data.name, epochs, seed, key)
    return config, key, defining, name


def _epochs(entry: Entry, plan_epochs: int | None, results: list[dict[str, Any]]) -> int | None:
    """The entry's epochs; for ``match_time``, from the finished runs it refers to (``None``
    while they have not all finished)."""
    if entry.match_time is None:
        return plan_epochs
    of, per = entry.match_time.of, entry.match_time.per_epoch
    target = [r["training_seconds"] for r in results if r["entry"] == of]
    per_epoch = [r["training_seconds"] / r["epochs"] for r in results if r["entry"] == per]
    if not target or not per_epoch:
        return None
    return matched_epochs(target, per_epoch)


def _fixed_epochs(entry: Entry) -> int | None:
    from shiftwise.training.config import config_from_options, resolve

    if entry.match_time is not None:
        return None
    return resolve(config_from_options(dict(entry.options)))[0].optim.epochs


def load_results(
    store: str | os.PathLike, grid: Grid, epochs: dict[str, int | None] | None = None
) -> list[dict[str, Any]]:
    """The checked ``study-run.json`` records of the grid's finished runs in ``store``, in
    grid order, each with the ``entry`` and ``run_id`` (``ENTRY-seedN``) it stands for here
    (``epochs``: each entry's fixed epochs, resolved when not given)."""
    store = Path(store)
    results: list[dict[str, Any]] = []
    for entry, seed in grid.runs():
        fixed = epochs[entry.name] if epochs is not None else _fixed_epochs(entry)
        count = _epochs(entry, fixed, results)
        if count is None:
            continue
        _, key, _, name = resolve_run(entry, seed, count)
        record = read_record(store / name / RESULT_NAME, key)
        if record is not None:
            results.append({**record, "entry": entry.name, "run_id": entry.run_id(seed)})
    return results


def _has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / name).is_file() for name in (STATE_NAME, PREVIOUS_NAME))


def train_run(config: Any, plan: EntryPlan, run_dir: Path, resume: bool) -> dict[str, Any]:
    """Train ``config`` into ``run_dir`` (resuming its newest resume point when ``resume``);
    returns the run's record: metrics, times, the trained model's size and, for sparse
    ShiftWiseConv models, the active pieces per stage (SW Table 2). ``wall_seconds`` covers
    the training call and this record."""
    from shiftwise.analysis.complexity import model_complexity
    from shiftwise.models.weights import model_from_weights
    from shiftwise.sparse.report import sparsity_report
    from shiftwise.training import train

    started = time.perf_counter()
    run = dataclasses.replace(
        config.run, output=str(run_dir), resume=str(run_dir) if resume else None, progress=False
    )
    result = train(dataclasses.replace(config, run=run))
    log = json.loads((run_dir / "log.json").read_text())
    sparse = bool(config.sparse.enabled)  # a requested config: None is dense
    model, _ = model_from_weights(result.weights, flag="study")
    size = (plan.image_size, plan.image_size)
    total = model_complexity(model, size, nonzero=sparse, in_chans=plan.in_chans)[-1]
    stages = [dataclasses.asdict(s) for s in sparsity_report(model).stages] if sparse else []
    training_seconds = sum(record["time"] for record in log)
    return {
        "seed": config.run.seed,
        "model": plan.model_name,
        "data": plan.data,
        "epochs": result.epochs,
        "top1": result.top1,
        "top5": result.top5,
        "chance": result.chance,
        "training_seconds": training_seconds,
        "images_per_second": result.epochs * plan.train_images / training_seconds,
        "params": total.params,
        "macs": total.macs,
        "val_top1": [record["val_top1"] for record in log],
        "epoch_seconds": [record["time"] for record in log],
        "stages": stages,
        "wall_seconds": time.perf_counter() - started,
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
    store: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Run every run of ``grid`` not yet finished in ``store`` (default ``output/runs``);
    returns all its run records (see :func:`load_results`).

    Every entry is checked first (:func:`~shiftwise.study.check_grid`). ``on_progress`` is
    called before each run and once at the end.
    """
    output = Path(output)
    store = output / "runs" if store is None else Path(store)
    _check_output(output, grid_record(grid))  # the cheap refusals before the grid's check
    _check_store(store)
    plans = check_grid(grid)
    fixed = {name: plan.epochs for name, plan in plans.items()}
    with _study_directory(output, store, grid):
        runs = grid.runs()
        results = load_results(store, grid, fixed)
        finished = {r["run_id"] for r in results}
        skipped = len(finished)
        todo = [(entry, seed) for entry, seed in runs if entry.run_id(seed) not in finished]
        logger.info(
            "study %s: %d runs, %d finished, %d to run", grid.name, len(runs), skipped, len(todo)
        )
        for index, (entry, seed) in enumerate(todo):
            run_id = entry.run_id(seed)
            if on_progress is not None:
                eta = _eta(plans, results, todo[index:])
                on_progress(Progress(skipped + index, len(runs), skipped, run_id, eta))
            epochs = _epochs(entry, plans[entry.name].epochs, results)
            config, key, defining, name = resolve_run(entry, seed, epochs)
            run_dir = store / name
            record = read_record(run_dir / RESULT_NAME, key)  # an earlier entry's same run
            if record is None:
                resume = _has_checkpoint(run_dir)
                logger.info(
                    "study %s: run %s (%d epochs) in %s%s",
                    grid.name,
                    run_id,
                    epochs,
                    run_dir,
                    " resumed" if resume else "",
                )
                record = train_run(config, plans[entry.name], run_dir, resume)
                record = {"key": key, "config": defining, **record}
                atomic_write(run_dir / RESULT_NAME, record_bytes(record))
            results = load_results(store, grid, fixed)
        if on_progress is not None:
            on_progress(Progress(len(runs), len(runs), skipped, None, 0.0))
    return results
