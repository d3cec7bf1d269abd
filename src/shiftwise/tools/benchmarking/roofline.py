"""Roofline of the shift-add: how close it runs to the machine's streaming bandwidth.

The shift-add (``shiftwise.ops.shift_add``) does no arithmetic worth counting (one add per
term), so its limit is memory traffic. Two byte models are reported for the horizontal
branch of an SW operator (``T = n_shuffles * nk`` terms, pieces ``y [B, P, Hy, Wy]``,
output ``[B, Cr, H, W]``, element size ``s``):

* ``ideal_bytes = s * (numel(y) + numel(out))``: every piece read once, every output
  written once -- what a fused kernel must move at least;
* ``reference_bytes = s * (2 * numel(y_padded) + T * 5 * numel(out))``: what the readable
  reference moves -- the zero-padded copy of ``y`` (read + write), then per term a gathered
  window (read + write) and the accumulation ``out = out + window`` (two reads, one write).

Achieved GB/s (``bytes / median time``) is compared with the machine's streaming bandwidth,
measured in the same run by a large tensor copy (``dst.copy_(src)``: ``2 * numel * s``
bytes), which is the practical roof for a memory-bound op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from shiftwise.layers import ShiftWiseConv2d
from shiftwise.models.registry import SW_KWARGS
from shiftwise.ops import shift_add
from shiftwise.tools.benchmarking.operators import SW_T_STAGES
from shiftwise.tools.benchmarking.timing import measure_interleaved

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

    Each stage's shift-add is timed interleaved with the copy, so both see the same load.
    """
    copy_call, copy_bytes = copy_bandwidth_call(copy_numel, device)
    results, copy_rates = [], []
    for channels, size, kernel_size in stages:
        if progress is not None:
            progress(f"roofline C={channels} {size}x{size} K={kernel_size}")
        op = ShiftWiseConv2d(channels, kernel_size, **SW_KWARGS).to(device).eval()
        x = torch.randn(batch, channels, size, size, device=device)
        with torch.no_grad():
            y = op.pieces(x.index_select(1, op.rep_index))
        index, offsets = op.horizontal_index, op.horizontal_offsets
        out_shape = (batch, op.n_rep, size, size)

        def call(y=y, index=index, offsets=offsets, out_size=(size, size)) -> object:
            with torch.no_grad():
                return shift_add(y, index, offsets, out_size)

        stats = measure_interleaved(
            {"shift_add": call, "copy": copy_call}, device, repeats=repeats, warmup=warmup
        )
        counts = shift_add_bytes(y, offsets, out_shape)
        seconds = stats["shift_add"].median
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
                "copy": stats["copy"].to_dict(),
                "ideal_gbps": counts["ideal_bytes"] / seconds / 1e9,
                "reference_gbps": counts["reference_bytes"] / seconds / 1e9,
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
