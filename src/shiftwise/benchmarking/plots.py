"""PNG figures of the benchmark results (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_models", "plot_operators", "plot_roofline", "plot_sweep"]

LABELS = {
    "shiftwise": "SW (shift-wise)",
    "slak": "SLaK (M×5 ∥ 5×M ∥ 5×5)",
    "dense": "dense M×M ∥ 5×5",
    "dw7": "7×7 depthwise",
}


def _error_bars(entries: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    median = np.array([e["median_s"] for e in entries]) * 1e3
    low = median - np.array([e["q1_s"] for e in entries]) * 1e3
    high = np.array([e["q3_s"] for e in entries]) * 1e3 - median
    return median, np.stack([low, high])


def _save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_operators(result: dict[str, Any], path: Path) -> None:
    """One panel per mode: time per call of each operator at each stage (log scale)."""
    stages = result["stages"]
    modes = list(stages[0]["modes"])
    operators = list(stages[0]["modes"][modes[0]]["operators"])
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
    positions = np.arange(len(stages))
    width = 0.8 / len(operators)
    for ax, mode in zip(axes[0], modes, strict=True):
        for i, name in enumerate(operators):
            entries = [stage["modes"][mode]["operators"][name] for stage in stages]
            median, err = _error_bars(entries)
            ax.bar(positions + i * width, median, width, yerr=err, label=LABELS.get(name, name))
        ax.set_xticks(positions + width * (len(operators) - 1) / 2)
        ax.set_xticklabels(
            [f"C={s['channels']}\n{s['size']}²  K={s['kernel_size']}" for s in stages]
        )
        ax.set_yscale("log")
        ax.set_ylabel("ms per call (median, IQR)")
        ax.set_title(f"{mode} (batch {result['batch']})")
    axes[0][0].legend(fontsize=8)
    _save(fig, path)


def plot_sweep(result: dict[str, Any], path: Path) -> None:
    """One panel per mode: time per call against the kernel size ``K`` (log y)."""
    points = result["points"]
    modes = list(points[0]["modes"])
    operators = list(points[0]["modes"][modes[0]]["operators"])
    kernels = [p["kernel_size"] for p in points]
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        for name in operators:
            entries = [p["modes"][mode]["operators"][name] for p in points]
            median, err = _error_bars(entries)
            growth = result["growth"][mode][name]
            ax.errorbar(
                kernels, median, yerr=err, marker="o", capsize=3,
                label=f"{LABELS.get(name, name)} (×{growth:.1f})",
            )  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("kernel size K")
        ax.set_ylabel("ms per call (median, IQR)")
        ax.set_title(f"{mode}: C={result['channels']}, {result['size']}², batch {result['batch']}")
        ax.legend(fontsize=8, title=f"growth K={kernels[-1]} / K={kernels[0]}")
    _save(fig, path)


def plot_roofline(result: dict[str, Any], path: Path) -> None:
    """Achieved GB/s of the shift-add per stage (ideal and reference byte models) vs copy."""
    stages = result["stages"]
    positions = np.arange(len(stages))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.27
    bars = (
        ("ideal_gbps", "shift_add (default op), ideal bytes"),
        ("reference_ideal_gbps", "reference, ideal bytes"),
        ("reference_actual_gbps", "reference, bytes it really moves"),
    )
    for i, (key, label) in enumerate(bars):
        ax.bar(positions + (i - 1) * width, [s[key] for s in stages], width, label=label)
    ax.axhline(result["copy_gbps_median"], color="k", linestyle="--", label="tensor copy (roof)")
    ax.set_xticks(positions)
    ax.set_xticklabels(
        [f"C={s['channels']} {s['size']}²\nK={s['kernel_size']}, T={s['terms']}" for s in stages]
    )
    ax.set_yscale("log")
    ax.set_ylabel("GB/s")
    ax.set_title(f"shift-add roofline (horizontal branch, batch {result['batch']}, fp32)")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_models(result: dict[str, Any], path: Path) -> None:
    """Images per second and peak memory of each model, train step and deploy inference."""
    modes = list(result["modes"])
    names = list(result["modes"][modes[0]])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    positions = np.arange(len(names))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        entries = [result["modes"][mode][name] for name in names]
        speed = np.array([e["images_per_s"]["median"] for e in entries])
        err = np.stack(
            [
                speed - np.array([e["images_per_s"]["q1"] for e in entries]),
                np.array([e["images_per_s"]["q3"] for e in entries]) - speed,
            ]
        )
        axes[0].bar(positions + i * width, speed, width, yerr=err, label=mode)
        memory = [(e["peak_memory_bytes"] or 0) / 2**20 for e in entries]
        axes[1].bar(positions + i * width, memory, width, label=mode)
    for ax, label in zip(axes, ("images / s (median, IQR)", "peak memory (MiB)"), strict=True):
        ax.set_xticks(positions + width * (len(modes) - 1) / 2)
        ax.set_xticklabels(names)
        ax.set_ylabel(label)
        ax.legend()
    axes[0].set_yscale("log")
    threads = f", {result['threads']} threads" if "threads" in result else ""
    fig.suptitle(f"{result['image_size']}×{result['image_size']}, batch {result['batch']}{threads}")
    _save(fig, path)
