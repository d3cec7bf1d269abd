"""Timing and memory measurement that survive a noisy, shared machine.

* :func:`measure_interleaved` times several variants round-robin (A B C, B C A, C A B, ...)
  so that load changes hit every variant alike, and ratios are taken side by side.
* Each repeat is timed with ``time.perf_counter`` on CPU and with CUDA events (after a
  synchronize) on CUDA.
* :class:`Stats` summarises the repeats by median, quartiles and relative spread (IQR / median).
* :func:`peak_memory` measures the peak memory one call needs: on CUDA the increase of
  ``torch.cuda.max_memory_allocated`` over the memory allocated before the call; on CPU the
  increase of the process's peak resident set size (Linux: the ``VmHWM`` high-water mark,
  reset through ``/proc/self/clear_refs`` before the call, after glibc's ``malloc_trim(0)``
  has handed freed heap memory back to the OS). The CPU figure includes whatever the
  allocator takes from the OS for the call, so it is indicative, not exact to the byte.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from shiftwise.errors import UsageError

__all__ = [
    "Stats",
    "measure_interleaved",
    "paired_ratio",
    "peak_memory",
    "synchronize",
    "time_call",
]

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class Stats:
    """Summary of repeated timings, in seconds per call."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def quartiles(self) -> tuple[float, float]:
        """First and third quartiles (the extremes when there are fewer than 4 repeats)."""
        if len(self.times) < 4:
            return min(self.times), max(self.times)
        q1, _, q3 = statistics.quantiles(self.times, n=4, method="inclusive")
        return q1, q3

    @property
    def spread(self) -> float:
        """Relative spread ``(q3 - q1) / median``."""
        q1, q3 = self.quartiles
        return (q3 - q1) / self.median if self.median > 0 else 0.0

    def to_dict(self) -> dict[str, float | list[float]]:
        q1, q3 = self.quartiles
        return {
            "median_s": self.median,
            "q1_s": q1,
            "q3_s": q3,
            "spread": self.spread,
            "times_s": list(self.times),
        }


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds taken by one call of ``fn`` on ``device`` (CUDA events on CUDA)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000.0
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def paired_ratio(numerator: Stats, denominator: Stats) -> dict[str, float]:
    """Median and quartiles of the per-repeat ratios ``numerator[r] / denominator[r]``.

    Interleaved variants of one repeat ran back to back under the same machine load, so the
    median of the paired ratios is steadier than the ratio of the two medians.
    """
    ratios = Stats(tuple(a / b for a, b in zip(numerator.times, denominator.times, strict=True)))
    q1, q3 = ratios.quartiles
    return {"median": ratios.median, "q1": q1, "q3": q3}


def measure_interleaved(
    variants: Mapping[str, Callable[[], object]],
    device: torch.device,
    repeats: int = 5,
    warmup: int = 1,
    min_sample_s: float = 0.0,
) -> dict[str, Stats]:
    """Time every variant ``repeats`` times, interleaved; returns ``{name: Stats}``.

    Each variant is first called ``warmup`` times (not timed). Repeat ``r`` then runs the
    variants in an order rotated by ``r`` so that no variant is always first or last. A fast
    variant is called ``n`` times per sample, ``n`` chosen from its last warm-up call so that
    a sample lasts at least ``min_sample_s``; the times are per call (sample / ``n``).
    """
    if repeats < 1:
        raise UsageError(f"repeats: expected an integer >= 1, got {repeats}")
    if warmup < 0:
        raise UsageError(f"warmup: expected an integer >= 0, got {warmup}")
    names = list(variants)
    calls_per_sample = {}
    for name in names:
        for _ in range(max(0, warmup - 1)):
            variants[name]()
        first = time_call(variants[name], device) if warmup else min_sample_s
        calls_per_sample[name] = max(1, math.ceil(min_sample_s / max(first, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            n, fn = calls_per_sample[name], variants[name]
            sample = time_call(lambda n=n, fn=fn: [fn() for _ in range(n)], device)
            times[name].append(sample / n)
    return {name: Stats(tuple(values)) for name, values in times.items()}


def _release_free_heap() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``; no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        return


def _status_bytes(field: str) -> int:
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes one call of ``fn`` needs beyond what was allocated before (module docstring).

    Returns ``None`` on a CPU platform without ``/proc/self/clear_refs`` (non-Linux).
    """
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    _release_free_heap()
    try:
        _PROC_CLEAR_REFS.write_text("5")
        before = _status_bytes("VmRSS")
    except OSError:
        return None
    fn()
    return max(0, _status_bytes("VmHWM") - before)
