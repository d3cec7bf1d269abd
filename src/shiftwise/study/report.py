"""The study's summary files: ``summary.csv``, ``summary.json``, ``summary.md`` and plots."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from io import StringIO
from pathlib import Path
from typing import Any

from shiftwise.io import atomic_write
from shiftwise.study.aggregate import budget_curves, budget_verdicts, separations, summary_rows
from shiftwise.study.grid import Grid
from shiftwise.study.plots import (
    plot_ablations,
    plot_accuracy_vs_time,
    plot_budget_curves,
    plot_curves,
)
from shiftwise.study.stats import __doc__ as STATS_DOC

__all__ = ["format_markdown", "write_report"]

_CSV_COLUMNS = (
    "entry", "model", "data", "setting", "epochs", "n", "top1_mean", "top1_std",
    "top1_ci95_low", "top1_ci95_high", "params", "macs", "training_seconds_mean",
    "training_seconds_std", "images_per_second_mean", "epochs_rule", "active_pieces",
)  # fmt: skip


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return " ".join(map(str, value))
    if isinstance(value, dict):
        return " ".join(f"{k}={v:.3f}" for k, v in value.items())
    return value


def _no_nan(value: Any) -> Any:
    """``value`` with every NaN float replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def _number(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _verdict_lines(verdicts: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "Training time to reach a top-1 (the highest mean every model reaches on that data "
        "set), on each model's curve of mean top-1 over its budgets, linear between budgets "
        "(≤: its cheapest budget already reaches it):",
        "",
        "| data | target top-1 % | model | training s to reach it | large kernel pays |",
        "|---|---|---|---|---|",
    ]
    for verdict in verdicts:
        for label, reached in verdict["times"].items():
            pays = verdict["pays"].get(label)
            answer = "" if pays is None else ("yes" if pays else "no")
            bound = "≤ " if reached["upper_bound"] else ""
            lines.append(
                f"| {verdict['data']} | {verdict['target_top1']:.2f} | {label} | "
                f"{bound}{reached['seconds']:.1f} | {answer} |"
            )
    lines.append(
        '\n"Large kernel pays": the model reaches the target in less training time than '
        "every ConvNeXt curve on that data set."
    )
    return lines


def _separation_lines(found: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "Ablation settings against their axis's default: difference of mean top-1 (final, "
        "and after each earlier epoch: how fast a setting learns), and where the 95% "
        "intervals overlap, the seeds per setting a two-sided t test at 5% needs to separate "
        "them with 80% power at the measured difference and standard deviations:",
        "",
        "| axis | setting | against | top-1 | difference (points) | intervals | seeds needed |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in found:
        if not item["intervals_overlap"]:
            intervals, needed = "apart", ""
        else:
            intervals = "overlap"
            needed = item["seeds_needed"]
            if needed is None:
                needed = "none: equal means" if item["difference"] == 0 else "> 1000 or n/a"
        lines.append(
            f"| {item['axis']} | {item['setting']} | {item['reference']} | {item['measure']} "
            f"| {item['difference']:+.2f} | {intervals} | {needed} |"
        )
    return lines


def format_markdown(grid: Grid, rows: Sequence[dict[str, Any]], figures: Sequence[Path]) -> str:
    """A markdown report: the table, how matched epochs were chosen, the active SW pieces
    per stage of sparse runs, the time each model needs to reach an accuracy (grids with
    budgets), the ablation settings' separations, and the figures."""
    lines = [
        f"# Study `{grid.name}`",
        "",
        grid.description,
        "",
        "| configuration | model | data | epochs | seeds | top-1 % mean ± std | 95% interval "
        "| params (M) | MACs (M) | training s | images/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['entry']} | {row['model']} | {row['data']} | "
            f"{', '.join(map(str, row['epochs']))} | {row['n']} | "
            f"{_number(row['top1_mean'])} ± {_number(row['top1_std'])} | "
            f"{_number(row['top1_ci95_low'])} to {_number(row['top1_ci95_high'])} | "
            f"{row['params'] / 1e6:.3f} | {row['macs'] / 1e6:.1f} | "
            f"{row['training_seconds_mean']:.1f} | {row['images_per_second_mean']:.0f} |"
        )
    lines += ["", "Top-1: final validation accuracy. " + " ".join(STATS_DOC.split())]
    lines.append(
        "Training time: the sum of the per-epoch wall times the trainer logs (training steps "
        "and that epoch's validation; setup excluded); images/s: training images per second "
        "of it. Sparse runs count non-zero parameters and MACs."
    )
    matched = [row for row in rows if row["epochs_rule"] != "fixed"]
    for row in matched:
        lines.append(
            f"\n`{row['entry']}` trains {', '.join(map(str, row['epochs']))} epochs: "
            f"{row['epochs_rule']}, rounded (at least 1)."
        )
    sparse = [row for row in rows if row["active_pieces"]]
    if sparse:
        stages = sorted({stage for row in sparse for stage in row["active_pieces"]})
        lines += [
            "",
            "Active ShiftWiseConv pieces per stage after sparse training (SW Table 2), "
            "mean share over seeds:",
            "",
            "| configuration | " + " | ".join(stages) + " |",
            "|---|" + "---|" * len(stages),
        ]
        for row in sparse:
            shares = [f"{row['active_pieces'].get(s, math.nan):.1%}" for s in stages]
            lines.append(f"| {row['entry']} | " + " | ".join(shares) + " |")
    verdicts = budget_verdicts(rows)
    if verdicts:
        lines += _verdict_lines(verdicts)
    found = separations(rows)
    if found:
        lines += _separation_lines(found)
    lines += [""] + [f"![{path.stem}]({path.name})" for path in figures]
    return "\n".join(lines) + "\n"


def write_report(output: Path, grid: Grid, results: Sequence[dict[str, Any]]) -> dict[str, Path]:
    """Write the summaries and figures of ``results`` into ``output``; returns their paths."""
    rows = summary_rows(grid, results)
    paths = {
        "csv": output / "summary.csv",
        "json": output / "summary.json",
        "markdown": output / "summary.md",
    }
    text = StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    atomic_write(paths["csv"], text.getvalue().encode())
    figures = [
        plot_accuracy_vs_time(rows, results, output / "accuracy_vs_time.png")[0],
        plot_curves(rows, results, output / "curves.png")[0],
    ]
    for extra in (
        plot_ablations(rows, output / "ablations.png"),
        plot_budget_curves(budget_curves(rows), output / "budget_curves.png"),
    ):
        if extra is not None:
            figures.append(extra[0])
    paths.update({path.stem: path for path in figures})
    summary = {
        "grid": grid.name,
        "configurations": rows,
        "budget_verdicts": budget_verdicts(rows),
        "separations": separations(rows),
        "runs": list(results),
    }
    atomic_write(paths["json"], json.dumps(_no_nan(summary), indent=1).encode())
    atomic_write(paths["markdown"], format_markdown(grid, rows, figures).encode())
    return paths
