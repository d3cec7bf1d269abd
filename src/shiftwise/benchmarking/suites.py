"""The ``shiftwise bench`` suites, each run and written as ``<suite>.json`` and ``<suite>.png``.

``ops``, ``sweep``, ``roofline``, ``models``: see the ``shiftwise bench`` help
(:mod:`shiftwise.tools.bench`) for what each measures; ``quick=True`` shrinks every shape to
run in seconds (what the tests run; its figures mean nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from shiftwise.benchmarking.environment import describe_environment, write_json
from shiftwise.benchmarking.models import run_model_suite
from shiftwise.benchmarking.operators import run_kernel_sweep, run_operator_suite
from shiftwise.benchmarking.plots import (
    plot_models,
    plot_operators,
    plot_roofline,
    plot_sweep,
)
from shiftwise.benchmarking.roofline import run_roofline
from shiftwise.errors import UsageError

__all__ = ["SUITES", "run_suite"]

SUITES = ("ops", "sweep", "roofline", "models")

_QUICK: dict[str, dict[str, Any]] = {
    "ops": {"stages": ((8, 8, 13),)},
    "sweep": {"kernel_sizes": (7, 13), "channels": 8, "size": 8, "modes": ("fwd", "fwd_bwd")},
    "roofline": {"stages": ((8, 8, 13),), "copy_numel": 2**20},
    "models": {
        "names": ("sw_atto", "slak_atto", "convnext_atto"),
        "baseline": "convnext_atto",
        "image_size": 32,
        "batch": 2,
        "model_kwargs": {"kernel_sizes": (7, 7, 7, 7)},
    },
}
_PLOTS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "ops": plot_operators,
    "sweep": plot_sweep,
    "roofline": plot_roofline,
    "models": plot_models,
}


def run_suite(
    suite: str,
    device: torch.device,
    out: Path,
    repeats: int = 5,
    warmup: int = 1,
    batch: int | None = None,
    image_size: int | None = None,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    runtimes: tuple[str, ...] = ("torch",),
) -> dict[str, Any]:
    """Run one suite, write ``out/<suite>.json`` and ``out/<suite>.png``; returns the payload.

    ``runtimes`` applies to the ``models`` suite only."""
    if suite not in SUITES:
        raise UsageError(f"suite: expected one of {SUITES}, got {suite!r}")
    on_cuda = device.type == "cuda"
    batch = batch if batch is not None else (32 if on_cuda else 1)
    kwargs: dict[str, Any] = {
        "repeats": repeats,
        "warmup": warmup,
        "batch": batch,
        "progress": progress,
    }
    if quick:
        kwargs.update(_QUICK[suite])
    if suite == "ops":
        result = run_operator_suite(device, **kwargs)
    elif suite == "sweep":
        result = run_kernel_sweep(device, **kwargs)
    elif suite == "roofline":
        result = run_roofline(device, **kwargs)
    else:
        default_size = kwargs.get("image_size") or (224 if on_cuda else 128)
        kwargs["image_size"] = image_size or default_size
        result = run_model_suite(device, runtimes=runtimes, **kwargs)
    payload = {
        "suite": suite,
        "quick": quick,
        "repeats": repeats,
        "warmup": warmup,
        "environment": describe_environment(device),
        "result": result,
    }
    write_json(out / f"{suite}.json", payload)
    _PLOTS[suite](result, out / f"{suite}.png")
    return payload
