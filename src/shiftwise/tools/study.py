"""``shiftwise study GRID --output DIR [--store RUNS]``: run a grid of training runs and
summarise them (see :mod:`shiftwise.study`); ``--dry-run`` checks the grid and prints what it
would run with a time estimate measured on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from shiftwise.study import (
    Estimate,
    Progress,
    check_grid,
    estimate_grid,
    load_grid,
    run_study,
    write_report,
)
from shiftwise.study.builtin import GRIDS
from shiftwise.tools.train import options_in_errors

__all__ = ["format_plan", "register", "run"]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_plan(grid, estimate: Estimate) -> str:
    """The dry run's table: entries, model, epochs, seeds, runs left, the estimated time
    left and where each entry's cost was measured."""
    lines = [f"grid {grid.name}: {len(grid.runs())} runs", ""]
    lines.append(
        f"{'entry':<32} {'model':<14} {'epochs':>6} {'seeds':>5} {'left':>4} "
        f"{'est. time':>10}  measured by"
    )
    for entry in grid.entries:
        item = estimate.entries[entry.name]
        matched = "*" if entry.match_time is not None else ""
        lines.append(
            f"{entry.name:<32} {entry.options.get('model', 'sw_atto'):<14} "
            f"{f'{item.epochs}{matched}':>6} {len(entry.seeds):>5} {item.runs_left:>4} "
            f"{_duration(item.seconds_per_run * item.runs_left):>10}  {item.source}"
        )
    lines.append(
        f"\nestimated total {_duration(estimate.total_seconds)} for the runs left, at the "
        f"load measured now (1-minute load average {estimate.load_average:.1f} on "
        f"{estimate.cpus} CPUs; more load, more time): per run, set-up and epochs timed "
        "by the store's finished runs of the same shape, else by short probe runs (1 and 4 "
        "steps, 2 epochs of 1 step, after a warm-up run); "
        "* epochs matched to measured times when run"
    )
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="run a grid of training runs over seeds and summarise them",
        description=(
            "Run a grid (models x options x data x seeds) as ordinary training runs into one "
            "directory, one at a time; finished runs are skipped and an interrupted run "
            "resumes from its checkpoint. Writes summary.csv/json/md and plots."
        ),
    )
    parser.add_argument(
        "grid", metavar="GRID", help=f"built-in ({', '.join(GRIDS)}) or a TOML file"
    )
    parser.add_argument("--output", required=False, default=None, help="study directory")
    parser.add_argument(
        "--store",
        default=None,
        help="run store shared by grids: a run two grids define alike trains once "
        "(default: OUTPUT/runs)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check the grid and print runs and time estimate"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The study; errors and log messages name the grid's options (``lr``), not config
    fields (``optim.lr``)."""
    with options_in_errors(spell=str):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from shiftwise.errors import UsageError

    grid = load_grid(args.grid)
    store = args.store or (None if args.output is None else str(Path(args.output) / "runs"))
    if args.dry_run:
        print(format_plan(grid, estimate_grid(grid, check_grid(grid), store)))
        return 0
    if args.output is None:
        raise UsageError("--output: required (the study directory) unless --dry-run")
    output = Path(args.output)
    bars: list[tqdm] = []  # opened at the first report, once the grid has been checked

    def show(progress: Progress) -> None:
        if not bars:
            bars.append(tqdm(total=progress.total, unit="run", disable=args.no_progress))
        bar = bars[0]
        bar.n = progress.done
        eta = "?" if progress.eta_seconds is None else _duration(progress.eta_seconds)
        bar.set_postfix_str(f"left {progress.total - progress.done}, ETA {eta}", refresh=False)
        bar.set_description(progress.run_id or "done")

    try:
        results = run_study(grid, output, show, store=store)
    finally:
        for bar in bars:
            bar.close()
    paths = write_report(output, grid, results)
    print((output / "summary.md").read_text())
    print(f"summary: {paths['csv']}, {paths['json']}, {paths['markdown']}")
    return 0
