"""``shiftwise study GRID --output DIR``: run a grid of training runs and summarise them
(see :mod:`shiftwise.study`); ``--dry-run`` checks the grid and prints what it would run with
a time estimate."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tqdm import tqdm

from shiftwise.study import (
    Progress,
    check_grid,
    estimate_seconds,
    load_grid,
    run_study,
    write_report,
)
from shiftwise.study.builtin import GRIDS

__all__ = ["format_plan", "register", "run"]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_plan(grid, estimates: dict[str, tuple[int, float]]) -> str:
    """The dry run's table: entries, model, epochs, seeds and the estimated time."""
    lines = [f"grid {grid.name}: {len(grid.runs())} runs", ""]
    lines.append(f"{'entry':<32} {'model':<14} {'epochs':>6} {'seeds':>5} {'est. time':>10}")
    total = 0.0
    for entry in grid.entries:
        epochs, seconds = estimates[entry.name]
        total += seconds * len(entry.seeds)
        matched = "*" if entry.match_time is not None else ""
        lines.append(
            f"{entry.name:<32} {entry.options.get('model', 'sw_atto'):<14} "
            f"{f'{epochs}{matched}':>6} {len(entry.seeds):>5} "
            f"{_duration(seconds * len(entry.seeds)):>10}"
        )
    load = os.getloadavg()[0]
    lines.append(
        f"\nestimated total {_duration(total)}: fastest of 3 timed steps on random data per "
        f"entry, now (load average {load:.1f} on {os.cpu_count()} CPUs); setup and data loading "
        "not counted; * epochs matched to measured times when run"
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
        "--dry-run", action="store_true", help="check the grid and print runs and time estimate"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shiftwise.errors import UsageError

    grid = load_grid(args.grid)
    if args.dry_run:
        print(format_plan(grid, estimate_seconds(grid, check_grid(grid))))
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
        results = run_study(grid, output, show)
    finally:
        for bar in bars:
            bar.close()
    paths = write_report(output, grid, results)
    print((output / "summary.md").read_text())
    print(f"summary: {paths['csv']}, {paths['json']}, {paths['markdown']}")
    return 0
