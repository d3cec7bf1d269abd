"""The study's figures (matplotlib, Agg), each a PNG of a stated pixel size.

* accuracy against training time: each seed a point, each configuration's mean a cross
  with its 95% interval, one panel per data set;
* validation top-1 per epoch: mean over seeds with a band of +- one standard deviation;
* ablations: top-1 per setting with 95% intervals, one panel per ablation axis;
* budget curves: per model, mean top-1 against mean training time over its budgets, with
  each budget's 95% interval as a band, one panel per data set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from shiftwise.io import atomic_write
from shiftwise.study.aggregate import top1_by_measure

__all__ = ["DPI", "plot_ablations", "plot_accuracy_vs_time", "plot_budget_curves", "plot_curves"]

DPI = 100
PANEL = (5.0, 4.0)  # inches per panel


def _figure(panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(PANEL[0] * panels, PANEL[1]), squeeze=False)
    return fig, list(axes[0])


def _save(fig, path: Path) -> tuple[Path, tuple[int, int]]:
    """Write ``fig`` to ``path``; returns the path and the image's (width, height) pixels."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    width, height = (round(v * DPI) for v in fig.get_size_inches())
    image = BytesIO()
    fig.savefig(image, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write(path, image.getvalue())
    return path, (width, height)


def _by_data(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    panels: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        panels.setdefault(row["data"], []).append(row)
    return panels


def _half_interval(low: float, high: float) -> float:
    """Half the width of the interval ``[low, high]``; 0 for an unknown (NaN) one."""
    half = (high - low) / 2
    return 0.0 if math.isnan(half) else half


def _half_ci(row: dict[str, Any]) -> float:
    return _half_interval(row["top1_ci95_low"], row["top1_ci95_high"])


def _per_data_set(
    rows: Sequence[dict[str, Any]],
    results: Sequence[dict[str, Any]],
    draw: Callable[[Any, dict[str, Any], list[dict[str, Any]], str], None],
    axis_labels: dict[str, str],
    path: Path,
) -> tuple[Path, tuple[int, int]]:
    """One panel per data set; ``draw(ax, row, runs, color)`` draws one configuration."""
    panels = _by_data(rows)
    fig, axes = _figure(len(panels))
    for ax, (data, data_rows) in zip(axes, panels.items(), strict=True):
        for index, row in enumerate(data_rows):
            runs = [r for r in results if r["entry"] == row["entry"]]
            draw(ax, row, runs, f"C{index % 10}")
        ax.set(title=data, **axis_labels)
        ax.legend(fontsize="small")
    return _save(fig, path)


def _draw_accuracy_vs_time(ax, row: dict[str, Any], runs: list[dict[str, Any]], color: str):
    seconds = [r["training_seconds"] for r in runs]
    ax.scatter(seconds, [r["top1"] for r in runs], color=color, alpha=0.5, s=18)
    ax.errorbar(
        row["training_seconds_mean"],
        row["top1_mean"],
        yerr=_half_ci(row),
        color=color,
        marker="X",
        markersize=10,
        capsize=4,
        label=row["entry"],
    )


def _draw_curve(ax, row: dict[str, Any], runs: list[dict[str, Any]], color: str):
    length = min(len(r["val_top1"]) for r in runs)
    values = np.array([r["val_top1"][:length] for r in runs])
    mean, epochs = values.mean(axis=0), np.arange(1, length + 1)
    ax.plot(epochs, mean, "o-", color=color, label=row["entry"])
    if len(runs) > 1:
        std = values.std(axis=0, ddof=1)
        ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2)


def plot_accuracy_vs_time(
    rows: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]], path: Path
) -> tuple[Path, tuple[int, int]]:
    """Top-1 against training seconds per run, per data set (see the module docstring)."""
    labels = {"xlabel": "training time (s)", "ylabel": "top-1 (%)"}
    return _per_data_set(rows, results, _draw_accuracy_vs_time, labels, path)


def plot_curves(
    rows: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]], path: Path
) -> tuple[Path, tuple[int, int]]:
    """Validation top-1 per epoch, mean and +- one standard deviation band over seeds."""
    labels = {"xlabel": "epoch", "ylabel": "validation top-1 (%)"}
    return _per_data_set(rows, results, _draw_curve, labels, path)


def ablation_series(
    rows: Sequence[dict[str, Any]],
) -> list[tuple[str, list[float], list[float]]]:
    """``(label, means, half 95% intervals)`` over ``rows`` (one ablation axis's settings),
    one per :func:`~shiftwise.study.aggregate.top1_by_measure` measure every row has: the
    top-1 after each epoch before the last, when every row trained the same epochs, then
    the final top-1."""
    summaries = [top1_by_measure(row) for row in rows]
    same = all(summary.keys() == summaries[0].keys() for summary in summaries)
    names = list(summaries[0]) if same else ["final"]
    return [
        (
            name if name == "final" else f"after {name}",
            [summary[name]["mean"] for summary in summaries],
            [
                _half_interval(summary[name]["ci_low"], summary[name]["ci_high"])
                for summary in summaries
            ],
        )
        for name in names
    ]


def plot_ablations(
    rows: Sequence[dict[str, Any]], path: Path
) -> tuple[Path, tuple[int, int]] | None:
    """Top-1 per setting with 95% intervals, one panel per ablation axis, one series per
    :func:`ablation_series` (after each epoch, final); ``None`` (nothing written) when no
    entry belongs to an axis."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        for group in row["groups"]:
            groups.setdefault(group, []).append(row)
    if not groups:
        return None
    fig, axes = _figure(len(groups))
    for ax, (group, group_rows) in zip(axes, groups.items(), strict=True):
        positions = np.arange(len(group_rows))
        series = ablation_series(group_rows)
        for index, (label, means, halves) in enumerate(series):
            offset = 0.25 * (index - (len(series) - 1) / 2) / max(1, len(series) - 1)
            ax.errorbar(positions + offset, means, yerr=halves, fmt="o", capsize=4, label=label)
        ax.set_xticks(
            positions, [row["setting"] for row in group_rows], rotation=15, fontsize="small"
        )
        ax.set_xlim(-0.5, len(group_rows) - 0.5)
        ax.set(ylabel="top-1 (%), mean and 95% interval", title=group)
        if len(series) > 1:
            ax.legend(fontsize="small")
    return _save(fig, path)


def plot_budget_curves(
    curves: dict[str, list[dict[str, Any]]], path: Path
) -> tuple[Path, tuple[int, int]] | None:
    """One line per model through its budgets' (mean training seconds, mean top-1), error
    bars and a band of the 95% intervals, one panel per data set
    (:func:`~shiftwise.study.aggregate.budget_curves`); ``None`` (nothing written) without
    curves."""
    if not curves:
        return None
    fig, axes = _figure(len(curves))
    for ax, (data, data_curves) in zip(axes, curves.items(), strict=True):
        for index, curve in enumerate(data_curves):
            points, color = curve["points"], f"C{index % 10}"
            seconds = [p["training_seconds_mean"] for p in points]
            means = [p["top1_mean"] for p in points]
            halves = [_half_ci(p) for p in points]
            ax.errorbar(seconds, means, yerr=halves, fmt="o-", color=color, capsize=4,
                        label=curve["label"])  # fmt: skip
            low = [m - h for m, h in zip(means, halves, strict=True)]
            high = [m + h for m, h in zip(means, halves, strict=True)]
            ax.fill_between(seconds, low, high, color=color, alpha=0.15)
        ax.set(title=data, xlabel="training time (s), mean over seeds",
               ylabel="top-1 (%), mean and 95% interval")  # fmt: skip
        ax.legend(fontsize="small")
    return _save(fig, path)
