"""Per-configuration summaries of a study's runs (top-1 over seeds, size, cost, speed), and
what they compare: accuracy-against-training-time curves with the time each model needs to
reach an accuracy (:func:`budget_verdicts`), and ablation settings against their axis's
default with the seeds a separation needs (:func:`separations`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from shiftwise.study.grid import Grid
from shiftwise.study.stats import seeds_to_separate, summarize

__all__ = [
    "budget_curves",
    "budget_verdicts",
    "separations",
    "summary_rows",
    "time_to_reach",
    "top1_by_measure",
]

# Options that set a run's budget: entries differing only in these lie on one curve.
_BUDGET_OPTIONS = ("epochs", "train_limit")
LARGE_KERNEL_PREFIXES = ("sw_", "slak_")


def _stage_fractions(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean share of active ShiftWiseConv pieces per stage over ``runs`` (sparse SW runs)."""
    shares: dict[str, list[float]] = {}
    for run in runs:
        for stage in run["stages"]:
            shares.setdefault(stage["stage"], []).append(stage["active"] / stage["total"])
    return {stage: sum(values) / len(values) for stage, values in sorted(shares.items())}


def _top1_by_epoch(runs: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Per epoch, the validation top-1 of ``runs`` over seeds (``epoch``, ``n``, ``mean``,
    ``std``, ``ci_low``, ``ci_high``); empty unless every run trained the same epochs."""
    curves = [run["val_top1"] for run in runs]
    if len({len(curve) for curve in curves}) != 1:
        return []
    return [
        {"epoch": epoch, **dataclasses.asdict(summarize(values))}
        for epoch, values in enumerate(zip(*curves, strict=True), start=1)
    ]


def summary_rows(grid: Grid, results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per entry with finished runs, in grid order: top-1 mean, std (ddof=1) and
    95% interval (Student t) over seeds, also after each epoch; parameters and MACs
    (non-zero ones for sparse runs), epochs, and the means of training seconds and training
    images/s; the stage shares of active SW pieces for sparse SW entries."""
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
                "top1_by_epoch": _top1_by_epoch(runs),
                "params": sum(r["params"] for r in runs) / len(runs),
                "macs": sum(r["macs"] for r in runs) / len(runs),
                "training_seconds_mean": seconds.mean,
                "training_seconds_std": seconds.std,
                "images_per_second_mean": speed.mean,
                "images_trained": runs[0]["images_per_second"] * runs[0]["training_seconds"],
                "active_pieces": _stage_fractions(runs),
                "variant": json.dumps(
                    {k: v for k, v in entry.options.items() if k not in _BUDGET_OPTIONS},
                    sort_keys=True,
                    default=str,
                ),
            }
        )
    return rows


def budget_curves(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per data set, the curves of configurations that differ only in budget (epochs,
    ``train_limit``): ``{"label", "model", "points"}``, points (rows) in order of budget
    (training images seen); only curves of two points or more."""
    curves: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        curves.setdefault((row["data"], row["variant"]), []).append(row)
    by_data: dict[str, list[dict[str, Any]]] = {}
    for (data, _), points in curves.items():
        if len(points) < 2:
            continue
        models = [c["model"] for c in by_data.get(data, [])]
        label = points[0]["model"] if points[0]["model"] not in models else points[0]["entry"]
        by_data.setdefault(data, []).append(
            {
                "label": label,
                "model": points[0]["model"],
                "points": sorted(points, key=lambda r: r["images_trained"]),
            }
        )
    return by_data


def time_to_reach(points: Sequence[dict[str, Any]], target: float) -> tuple[float, bool] | None:
    """``(seconds, at_first)``: the training time at which the curve of mean top-1 over mean
    training time (``points`` in order of budget) first reaches ``target``, linear between
    budgets; ``at_first`` when its cheapest budget already does (then the time is an upper
    bound). ``None`` when no budget reaches it."""
    previous = None
    for point in points:
        seconds, top1 = point["training_seconds_mean"], point["top1_mean"]
        if top1 >= target:
            if previous is None:
                return seconds, True
            (s0, a0) = previous
            return s0 + (target - a0) / (top1 - a0) * (seconds - s0), False
        previous = (seconds, top1)
    return None


def budget_verdicts(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per data set with two budget curves or more: the target top-1 (the highest mean
    accuracy every curve reaches: the lowest of their best means), each curve's time to
    reach it, the fastest, and whether each large-kernel model (``sw_*``, ``slak_*``)
    reaches it before every ``convnext_*`` curve (``pays``; ``None`` without a ConvNeXt
    curve)."""
    verdicts = []
    for data, curves in budget_curves(rows).items():
        if len(curves) < 2:  # nothing to compare with
            continue
        target = min(max(p["top1_mean"] for p in c["points"]) for c in curves)
        times = {}
        for curve in curves:
            reached = time_to_reach(curve["points"], target)
            assert reached is not None  # every curve reaches the lowest best mean
            times[curve["label"]] = {"seconds": reached[0], "upper_bound": reached[1]}
        convnext = [times[c["label"]]["seconds"] for c in curves if c["model"].startswith("conv")]
        pays = {
            c["label"]: (times[c["label"]]["seconds"] < min(convnext) if convnext else None)
            for c in curves
            if c["model"].startswith(LARGE_KERNEL_PREFIXES)
        }
        fastest = min(times, key=lambda label: times[label]["seconds"])
        verdicts.append(
            {"data": data, "target_top1": target, "times": times, "fastest": fastest, "pays": pays}
        )
    return verdicts


def top1_by_measure(row: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A summary row's top-1 over seeds (``mean``, ``std``, ``ci_low``, ``ci_high``) by
    measure: ``"epoch k"`` after each epoch before the last (how fast a configuration
    learns, left when the final top-1 is at the ceiling), then ``"final"``."""
    measures = {f"epoch {e['epoch']}": e for e in row["top1_by_epoch"][:-1]}
    measures["final"] = {
        "mean": row["top1_mean"],
        "std": row["top1_std"],
        "ci_low": row["top1_ci95_low"],
        "ci_high": row["top1_ci95_high"],
    }
    return measures


def _measures(row: dict[str, Any], reference: dict[str, Any]) -> list[tuple[str, dict, dict]]:
    """``(measure, row's top-1, reference's top-1)``: the final top-1, then, when both
    trained the same epochs, each earlier epoch's (:func:`top1_by_measure`)."""
    top1, against = top1_by_measure(row), top1_by_measure(reference)
    names = ["final", *list(top1)[:-1]] if top1.keys() == against.keys() else ["final"]
    return [(name, top1[name], against[name]) for name in names]


def separations(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per ablation axis, each setting against the axis's first row (its default), on each
    of :func:`_measures`: the difference of mean top-1, whether the two 95% intervals
    overlap, and when they do the seeds per setting a two-sided t test at 5% would need to
    separate them with 80% power at the measured difference and standard deviations
    (:func:`seeds_to_separate`)."""
    axes: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        for group in row["groups"]:
            axes.setdefault(group, []).append(row)
    found = []
    for axis, members in axes.items():
        reference = members[0]
        for row in members[1:]:
            for measure, top1, against in _measures(row, reference):
                difference = top1["mean"] - against["mean"]
                overlap = not (
                    top1["ci_low"] > against["ci_high"] or against["ci_low"] > top1["ci_high"]
                )
                spreads = (top1["std"], against["std"])
                known = all(s == s for s in spreads)  # NaN with one seed
                found.append(
                    {
                        "axis": axis,
                        "setting": row["setting"],
                        "reference": reference["setting"],
                        "measure": measure,
                        "difference": difference,
                        "intervals_overlap": overlap,
                        "seeds_needed": (
                            seeds_to_separate(difference, *spreads) if overlap and known else None
                        ),
                    }
                )
    return found
