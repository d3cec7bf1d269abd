"""The shift-add: the one operation that turns many small convolutions into a large kernel.

Every large-kernel operator of this library is written as "small depthwise convolutions
producing *pieces*, then each piece shifted by an integer offset and summed into its output
channel". This module holds the functional form of that second step.

Given pieces ``y`` of shape ``[B, P, Hy, Wy]``, an index table ``index`` of shape ``[C, T]``
and per-term offsets ``offsets`` of shape ``[T, 2]`` (row, column), the shift-add computes::

    out[b, c, h, w] = sum_t y[b, index[c, t], h + offsets[t, 0], w + offsets[t, 1]]

for ``h < H``, ``w < W`` (the requested output size), where a term whose source position
falls outside ``[0, Hy) x [0, Wy)`` contributes zero (zero padding). Offsets are shared by
all output channels of a term; which piece a channel reads is free (``index``). This is
exactly the form of ShiftwiseConv's shuffled groups (one term per group and block position)
and of the eq-SLaK decomposition (one term per kernel piece).

:func:`shift_add_reference` is the specification: short, obvious and differentiable through
autograd. :func:`shift_add` runs the fast kernels registered in :mod:`shiftwise.ops.custom_ops`,
which are tested against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shiftwise.ops.custom_ops import shift_add_op

__all__ = ["check_shift_add_args", "shift_add", "shift_add_reference"]


def check_shift_add_args(
    y: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, out_size: tuple[int, int]
) -> None:
    """Raise ``TypeError``/``ValueError`` naming the argument when the shift-add inputs are bad."""
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(f"y: expected a floating point tensor, got {_describe(y)}")
    if y.dim() != 4:
        raise ValueError(f"y: expected a 4-D tensor [B, P, H, W], got shape {tuple(y.shape)}")
    if not isinstance(index, torch.Tensor) or index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"index: expected an int32/int64 tensor, got {_describe(index)}")
    if index.dim() != 2 or index.shape[1] == 0:
        raise ValueError(f"index: expected shape [C, T] with T >= 1, got {tuple(index.shape)}")
    if not isinstance(offsets, torch.Tensor) or offsets.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"offsets: expected an int32/int64 tensor, got {_describe(offsets)}")
    if offsets.shape != (index.shape[1], 2):
        raise ValueError(
            f"offsets: expected shape [T, 2] = [{index.shape[1]}, 2] to match index, "
            f"got {tuple(offsets.shape)}"
        )
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= y.shape[1]):
        raise ValueError(
            f"index: entries must lie in [0, {y.shape[1]}) (the piece channels of y), "
            f"got range [{int(index.min())}, {int(index.max())}]"
        )
    if len(out_size) != 2 or min(out_size) < 1:
        raise ValueError(f"out_size: expected two positive integers (H, W), got {out_size}")


def shift_add_reference(
    y: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, out_size: tuple[int, int]
) -> torch.Tensor:
    """Reference shift-add (see the module docstring): ``[B, P, Hy, Wy] -> [B, C, H, W]``.

    Zero-pad the pieces so that every term's window lies inside, then for each term gather
    the pieces it reads (``index[:, t]``), cut its ``H x W`` window and accumulate.
    """
    check_shift_add_args(y, index, offsets, out_size)
    height, width = out_size
    y_height, y_width = y.shape[-2:]
    rows, cols = offsets[:, 0].tolist(), offsets[:, 1].tolist()
    top, left = max(0, -min(rows)), max(0, -min(cols))
    bottom = max(0, max(rows) + height - y_height)
    right = max(0, max(cols) + width - y_width)
    padded = F.pad(y, (left, right, top, bottom))
    out = y.new_zeros(y.shape[0], index.shape[0], height, width)
    for t, (row, col) in enumerate(zip(rows, cols, strict=True)):
        window = padded[..., top + row : top + row + height, left + col : left + col + width]
        out = out + window.index_select(1, index[:, t])
    return out


def shift_add(
    y: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, out_size: tuple[int, int]
) -> torch.Tensor:
    """Shift-add of pieces ``y`` ``[B, P, Hy, Wy]`` into ``[B, C, H, W]`` (module docstring).

    Runs the registered custom op ``shiftwise::shift_add`` (fast CPU kernel, Triton on
    CUDA when installed; see :mod:`shiftwise.ops.custom_ops`), which ``torch.compile``
    traces without graph breaks. Arguments are checked in eager mode only (the range check
    of ``index`` reads tensor values, which would break a compiled graph).
    """
    if not torch.compiler.is_compiling():
        check_shift_add_args(y, index, offsets, out_size)
    return shift_add_op(y, index, offsets, int(out_size[0]), int(out_size[1]))


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {value.dtype}"
    return type(value).__name__
