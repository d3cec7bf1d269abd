"""Roofline of the shift-add: how close it runs to the machine's streaming bandwidth.

The shift-add does no arithmetic worth counting (one add per term), so its limit is memory
traffic. For the horizontal branch of an SW operator (``T = n_shuffles * nk`` terms, pieces
``y [B, P, Hy, Wy]``, output ``[B, Cr, H, W]``, element size ``s``) the byte model is

* ``ideal_bytes = s * (numel(y) + numel(out))``: every piece read once, every output
  written once -- what any implementation must move at least.

Both ``shiftwise.ops.shift_add`` (the default dispatch: the registered custom op) and
``shift_add_reference`` (the readable oracle) are timed, interleaved with a large tensor copy
(``dst.copy_(src)``: ``2 * numel * s`` bytes), the machine's streaming bandwidth measured in
the same run -- the practical roof of a memory-bound op. Achieved GB/s = bytes / median time.
For the reference, ``reference_bytes = s * (2 * numel(y_padded) + 5 * T * numel(out))``
estimates what it really moves (a zero-padded copy of ``y``, then per term a gathered window,
read + write, and ``out = out + window``, two reads and one write).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from shiftwise.analysis.timing import measure_interleaved, paired_ratio
from shiftwise.benchmarking.operators import SW_T_STAGES
from shiftwise.layers import ShiftWiseConv2d
from shiftwise.models.registry import SW_KWARGS
from shiftwise.ops import shift_add, shift_add_reference

__all__ = ["copy_bandwidth_call", "run_roofline", "shift_add_bytes"]


def shift_add_bytes(
    y: torch.Tensor, offsets: torch.Tensor, out_shape: Sequence[int]
) -> dict[str, int]:
    """The ideal and reference byte counts of one shift-add (module docstring)."""
    size = y.element_size()
    out_numel = 1
    for dim in out_shape:
        out_numel *= int(dim)
    rows, cols = offsets[:, 0].tolist(), offsets[:, 1].tolist()
    height, width = int(out_shape[-2]), int(out_shape[-1])
    y_height, y_width = y.shape[-2:]
    pad_h = max(0, -min(rows)) + max(0, max(rows) + height - y_height)
    pad_w = max(0, -min(cols)) + max(0, max(cols) + width - y_width)
    padded = y.shape[0] * y.shape[1] * (y_height + pad_h) * (y_width + pad_w)
    terms = offsets.shape[0]
    return {
        "ideal_bytes": size * (y.numel() + out_numel),
        "reference_bytes": size * (2 * padded + terms * 5 * out_numel),
    }


def copy_bandwidth_call(numel: int, device: torch.device) -> tuple[Callable[[], object], int]:
    """A callable copying a ``numel``-element float32 tensor, and the bytes it moves."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * numel * src.element_size()


def run_roofline(
    device: torch.device,
    stages: Sequence[tuple[int, int, int]] = SW_T_STAGES,
    batch: int = 1,
    copy_numel: int = 64 * 2**20,
    repeats: int = 5,
    warmup: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Achieved GB/s of the SW horizontal shift-add at each stage vs a same-run tensor copy.

    At each stage the default shift-add, the reference and the copy are timed interleaved,
    so all three see the same load.
    """
    copy_call, copy_bytes = copy_bandwidth_call(copy_numel, device)
    results, copy_rates = [], []
    for channels, size, kernel_size in stages:
        if progress is not None:
            progress(f"roofline C={channels} {size}x{size} K={kernel_size}")
        op = ShiftWiseConv2d(channels, kernel_size, **SW_KWARGS).to(device).eval()
        pieces = op.inference_module("pieces")
        x_rep = torch.randn(batch, pieces.n_rep, size, size, device=device)
        with torch.no_grad():
            y, tables, all_offsets = pieces.shift_add_inputs(x_rep)
        index, offsets = tables[0], all_offsets[0]
        out_shape = (batch, pieces.n_rep, size, size)

        def call(fn, y=y, index=index, offsets=offsets, out_size=(size, size)) -> object:
            with torch.no_grad():
                return fn(y, index, offsets, out_size)

        variants = {
            "shift_add": lambda call=call: call(shift_add),
            "reference": lambda call=call: call(shift_add_reference),
            "copy": copy_call,
        }
        stats = measure_interleaved(
            variants, device, repeats=repeats, warmup=warmup, min_sample_s=0.02
        )
        counts = shift_add_bytes(y, offsets, out_shape)
        seconds = stats["shift_add"].median
        reference_seconds = stats["reference"].median
        copy_rate = copy_bytes / stats["copy"].median / 1e9
        copy_rates.append(copy_rate)
        results.append(
            {
                "channels": channels,
                "size": size,
                "kernel_size": kernel_size,
                "pieces_shape": list(y.shape),
                "out_shape": list(out_shape),
                "terms": int(offsets.shape[0]),
                **counts,
                "shift_add": stats["shift_add"].to_dict(),
                "reference": stats["reference"].to_dict(),
                "copy": stats["copy"].to_dict(),
                "ideal_gbps": counts["ideal_bytes"] / seconds / 1e9,
                "reference_ideal_gbps": counts["ideal_bytes"] / reference_seconds / 1e9,
                "reference_actual_gbps": counts["reference_bytes"] / reference_seconds / 1e9,
                "fraction_of_copy": counts["ideal_bytes"] / seconds / 1e9 / copy_rate,
                "speedup_over_reference": paired_ratio(stats["reference"], stats["shift_add"]),
                "copy_gbps": copy_rate,
            }
        )
    return {
        "batch": batch,
        "dtype": "float32",
        "copy_bytes": copy_bytes,
        "copy_gbps_median": sorted(copy_rates)[len(copy_rates) // 2],
        "stages": results,
    }
