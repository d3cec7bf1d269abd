"""Per-configuration summaries of a study's runs: top-1 over seeds, size, cost, speed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shiftwise.study.grid import Grid
from shiftwise.study.stats import summarize

__all__ = ["summary_rows"]


def _stage_fractions(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean share of active ShiftWiseConv pieces per stage over ``runs`` (sparse SW runs)."""
    shares: dict[str, list[float]] = {}
    for run in runs:
        for stage in run["stages"]:
            shares.setdefault(stage["stage"], []).append(stage["active"] / stage["total"])
    return {stage: sum(values) / len(values) for stage, values in sorted(shares.items())}


def summary_rows(grid: Grid, results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per entry with finished runs, in grid order: top-1 mean, std (ddof=1) and
    95% interval (Student t) over seeds; parameters and MACs (non-zero ones for sparse runs),
    epochs, and the means of training seconds and training images/s; the stage shares of
    active SW pieces for sparse SW entries."""
    rows = []
    for entry in grid.entries:
        runs = [r for r in results if r["entry"] == entry.name]
        if not runs:
            continue
        top1 = summarize([r["top1"] for r in runs])
        seconds = summarize([r["training_seconds"] for r in runs])
        speed = summarize([r["images_per_second"] for r in runs])
        rows.append(
            {
                "entry": entry.name,
                "model": runs[0]["model"],
                "data": runs[0]["data"],
                "groups": list(entry.groups),
                "setting": entry.label,
                "epochs": sorted({r["epochs"] for r in runs}),
                "epochs_rule": (
                    f"matched to {entry.match_time.of}'s mean training time at "
                    f"{entry.match_time.per_epoch}'s mean time per epoch"
                    if entry.match_time is not None
                    else "fixed"
                ),
                "seeds": [r["seed"] for r in runs],
                "n": top1.n,
                "top1_mean": top1.mean,
                "top1_std": top1.std,
                "top1_ci95_low": top1.ci_low,
                "top1_ci95_high": top1.ci_high,
                "params": sum(r["params"] for r in runs) / len(runs),
                "macs": sum(r["macs"] for r in runs) / len(runs),
                "training_seconds_mean": seconds.mean,
                "training_seconds_std": seconds.std,
                "images_per_second_mean": speed.mean,
                "active_pieces": _stage_fractions(runs),
            }
        )
    return rows
