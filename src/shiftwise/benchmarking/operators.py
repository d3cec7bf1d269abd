"""Operator-level benchmarks: SW vs SLaK vs dense large kernel vs 7x7 depthwise.

Three modes per operator, each on one input ``[B, C, H, W]``:

* ``fwd``: eval mode, training form (BNs unfolded), under ``torch.no_grad``;
* ``fwd_bwd``: train mode, forward then backward of a fixed random output gradient
  (gradients reach the input and every parameter);
* ``deploy``: a re-parameterised copy (:func:`shiftwise.reparameterize`) in eval mode, no grad.

All operators of one comparison see the same tensor shapes; the timings are interleaved
(:func:`~shiftwise.analysis.timing.measure_interleaved`) and every ratio is the
median of the per-repeat ratios, so a load change on the machine hits both sides alike.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from shiftwise.analysis.timing import Stats, measure_interleaved, paired_ratio
from shiftwise.errors import UsageError
from shiftwise.models.operators import build_operator, list_operators
from shiftwise.models.registry import SLAK_KWARGS, SW_KWARGS
from shiftwise.models.reparam import reparameterize

__all__ = [
    "BASELINE",
    "MODES",
    "OPERATORS",
    "SWEEP_CHANNELS",
    "SWEEP_KERNELS",
    "SWEEP_SIZE",
    "SW_T_STAGES",
    "make_operator",
    "operator_call",
    "run_kernel_sweep",
    "run_operator_suite",
]

OPERATORS = ("shiftwise", "slak", "dense", "dw7")
"""SW v2 (official SW-T settings), SLaK decomposed (M x 5 ∥ 5 x M ∥ 5 x 5), RepLKNet-style
dense M x M ∥ 5 x 5, and the plain 7x7 depthwise conv of ConvNeXt (the baseline)."""
BASELINE = "dw7"
MODES = ("fwd", "fwd_bwd", "deploy")
SW_T_STAGES = ((80, 56, 51), (160, 28, 49), (320, 14, 47), (640, 7, 13))
"""(channels, spatial size, kernel size) of the four SW-T stages at 224x224 input."""
SWEEP_KERNELS, SWEEP_CHANNELS, SWEEP_SIZE = (13, 25, 51, 75, 101), 80, 56
"""The kernel-size sweep's default kernels and shape (SW-T stage 1)."""


def make_operator(name: str, channels: int, kernel_size: int) -> nn.Module:
    """The operator ``name`` over ``channels`` with big kernel ``K``: one of :data:`OPERATORS`
    (SW and SLaK with their released settings) or any other registered operator
    (:func:`~shiftwise.models.operators.register_operator`, built with its defaults).

    ``dw7`` ignores ``kernel_size``: it is always the 7x7 depthwise baseline.
    """
    if name == "dw7":
        return build_operator("conv", channels, 7)
    if name not in list_operators():
        raise UsageError(
            f"operator: expected one of {[*OPERATORS, *list_operators()]}, got {name!r}"
        )
    defaults = {"shiftwise": SW_KWARGS, "slak": SLAK_KWARGS}.get(name, {})
    return build_operator(name, channels, kernel_size, **defaults)


def operator_call(module: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], object]:
    """A zero-argument callable running ``module`` on ``x`` in ``mode`` (module docstring)."""
    if mode == "fwd":
        module.eval()

        def forward() -> object:
            with torch.no_grad():
                return module(x)

        return forward
    if mode == "fwd_bwd":
        module.train()
        x_grad = x.detach().clone().requires_grad_(True)
        with torch.no_grad():
            grad = torch.randn_like(module(x))

        def forward_backward() -> object:
            module.zero_grad(set_to_none=True)
            x_grad.grad = None
            module(x_grad).backward(grad)
            return None

        return forward_backward
    if mode == "deploy":
        deployed = reparameterize(copy.deepcopy(module).eval())
        return operator_call(deployed, x, "fwd")
    raise UsageError(f"mode: expected one of {MODES}, got {mode!r}")


def _measure_modes(
    modules: dict[str, nn.Module],
    x: torch.Tensor,
    modes: Sequence[str],
    device: torch.device,
    repeats: int,
    warmup: int,
    progress: Callable[[str], None] | None,
    label: str,
) -> dict[str, dict[str, Any]]:
    """``{mode: summary}``: the ``modules`` timed interleaved on ``x`` in each mode."""
    summaries = {}
    for mode in modes:
        if progress is not None:
            progress(f"{label} {mode}")
        calls = {name: operator_call(module, x, mode) for name, module in modules.items()}
        stats = measure_interleaved(
            calls, device, repeats=repeats, warmup=warmup, min_sample_s=0.02
        )
        summaries[mode] = _summarise(stats)
    return summaries


def run_operator_suite(
    device: torch.device,
    stages: Sequence[tuple[int, int, int]] = SW_T_STAGES,
    batch: int = 1,
    modes: Sequence[str] = MODES,
    operators: Sequence[str] = OPERATORS,
    repeats: int = 5,
    warmup: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time every operator in every mode at every stage shape ``(C, H, K)``.

    Returns ``{"stages": [{"channels", "size", "kernel_size", "modes": {mode: {"operators":
    {op: Stats dict}, "ratio_to_baseline": {op: ratio}, "sw_over_slak": ratio}}}]}``.
    """
    results = []
    for channels, size, kernel_size in stages:
        x = torch.randn(batch, channels, size, size, device=device)
        modules = {
            name: make_operator(name, channels, kernel_size).to(device) for name in operators
        }
        label = f"ops C={channels} {size}x{size} K={kernel_size}"
        entry: dict[str, Any] = {
            "channels": channels,
            "size": size,
            "kernel_size": kernel_size,
            "modes": _measure_modes(modules, x, modes, device, repeats, warmup, progress, label),
        }
        results.append(entry)
    return {"batch": batch, "baseline": BASELINE, "stages": results}


def run_kernel_sweep(
    device: torch.device,
    kernel_sizes: Sequence[int] = SWEEP_KERNELS,
    channels: int = SWEEP_CHANNELS,
    size: int = SWEEP_SIZE,
    batch: int = 1,
    modes: Sequence[str] = ("fwd_bwd",),
    operators: Sequence[str] = ("shiftwise", "slak", "dense"),
    repeats: int = 5,
    warmup: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time the large-kernel operators at one shape for each ``K`` in ``kernel_sizes``.

    The 7x7 baseline is timed alongside at every point (its time does not depend on ``K``;
    it anchors the ratios). ``growth[mode][op]`` is ``time(K_max) / time(K_min)``.
    """
    points = []
    x = torch.randn(batch, channels, size, size, device=device)
    names = [*operators, BASELINE] if BASELINE not in operators else list(operators)
    for kernel_size in kernel_sizes:
        modules = {name: make_operator(name, channels, kernel_size).to(device) for name in names}
        label = f"sweep K={kernel_size}"
        modes_summary = _measure_modes(modules, x, modes, device, repeats, warmup, progress, label)
        points.append({"kernel_size": kernel_size, "modes": modes_summary})
    first, last = points[0], points[-1]
    growth = {
        mode: {
            name: last["modes"][mode]["operators"][name]["median_s"]
            / first["modes"][mode]["operators"][name]["median_s"]
            for name in names
        }
        for mode in modes
    }
    return {
        "channels": channels,
        "size": size,
        "batch": batch,
        "baseline": BASELINE,
        "points": points,
        "growth": growth,
        "growth_definition": f"median time at K={kernel_sizes[-1]} / at K={kernel_sizes[0]}",
    }


def _summarise(stats: dict[str, Stats]) -> dict[str, Any]:
    summary: dict[str, Any] = {"operators": {name: s.to_dict() for name, s in stats.items()}}
    if BASELINE in stats:
        summary["ratio_to_baseline"] = {
            name: paired_ratio(s, stats[BASELINE]) for name, s in stats.items()
        }
    if "shiftwise" in stats and "slak" in stats:
        summary["sw_over_slak"] = paired_ratio(stats["shiftwise"], stats["slak"])
    return summary
