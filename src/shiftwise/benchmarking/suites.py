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
from shiftwise.benchmarking.models import MODEL_NAMES, run_model_suite
from shiftwise.benchmarking.operators import (
    SW_T_STAGES,
    SWEEP_CHANNELS,
    SWEEP_KERNELS,
    SWEEP_SIZE,
    run_kernel_sweep,
    run_operator_suite,
)
from shiftwise.benchmarking.plots import (
    plot_models,
    plot_operators,
    plot_roofline,
    plot_sweep,
)
from shiftwise.benchmarking.roofline import run_roofline
from shiftwise.errors import UsageError
from shiftwise.models.arguments import FLOAT_BYTES, estimate_activation_bytes, estimate_parameters
from shiftwise.models.registry import check_model_arguments

__all__ = ["SUITES", "memory_estimate", "run_suite", "suite_arguments"]

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

# [B, C, H + K - 1, W + K - 1] tensors an operator comparison keeps alive at once (inputs,
# padded inputs, outputs, gradients, branch intermediates of every operator), about.
_OPERATOR_TENSORS = 16
# Weights, gradients, two AdamW states and the deploy copy of each benchmarked model.
_MODEL_COPIES = 5


def suite_arguments(
    suite: str,
    device: torch.device,
    batch: int | None = None,
    image_size: int | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """The shape arguments ``suite`` runs with (its function's defaults, then ``batch``: 1 on
    CPU, 32 on CUDA; ``quick`` shapes; the models' ``image_size``: 128 on CPU, 224 on CUDA)."""
    if suite not in SUITES:
        raise UsageError(f"suite: expected one of {SUITES}, got {suite!r}")
    on_cuda = device.type == "cuda"
    arguments: dict[str, Any] = {"batch": batch if batch is not None else (32 if on_cuda else 1)}
    if quick:
        arguments.update(_QUICK[suite])
    if suite == "models":
        default_size = arguments.get("image_size") or (224 if on_cuda else 128)
        arguments["image_size"] = image_size or default_size
    return arguments


def memory_estimate(
    suite: str,
    device: torch.device,
    batch: int | None = None,
    image_size: int | None = None,
    quick: bool = False,
) -> int:
    """Bytes ``suite`` needs at least on ``device`` with these shapes (what
    :func:`run_suite` would run): the largest operator comparison, or every model's weights,
    gradients and optimizer state plus one training step's activations."""
    arguments = suite_arguments(suite, device, batch, image_size, quick)
    batch = arguments["batch"]
    if suite == "models":
        names = arguments.get("names", MODEL_NAMES)
        models = [check_model_arguments(name) for name in names]
        weights = _MODEL_COPIES * FLOAT_BYTES * sum(estimate_parameters(m) for m in models)
        steps = max(estimate_activation_bytes(m, arguments["image_size"]) for m in models)
        return weights + batch * steps
    if suite == "sweep":
        size = arguments.get("size", SWEEP_SIZE)
        kernel = max(arguments.get("kernel_sizes", SWEEP_KERNELS))
        shapes = [(arguments.get("channels", SWEEP_CHANNELS), size, kernel)]
    else:
        shapes = arguments.get("stages", SW_T_STAGES)
    largest = max(channels * (size + kernel - 1) ** 2 for channels, size, kernel in shapes)
    return _OPERATOR_TENSORS * FLOAT_BYTES * batch * largest


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
    kwargs: dict[str, Any] = {
        "repeats": repeats,
        "warmup": warmup,
        "progress": progress,
        **suite_arguments(suite, device, batch, image_size, quick),
    }
    if suite == "ops":
        result = run_operator_suite(device, **kwargs)
    elif suite == "sweep":
        result = run_kernel_sweep(device, **kwargs)
    elif suite == "roofline":
        result = run_roofline(device, **kwargs)
    else:
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
