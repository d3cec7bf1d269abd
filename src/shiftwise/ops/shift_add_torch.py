"""Fast shift-add and its adjoint in plain PyTorch ops (any device; the CPU kernel).

Same contract as :func:`shiftwise.ops.shift_add.shift_add_reference`::

    out[b, c, h, w] = sum_t y[b, index[c, t], h + offsets[t, 0], w + offsets[t, 1]]

but organised for speed, with no per-term temporaries:

* forward: terms that share an offset are summed together *before* shifting, with one
  ``F.embedding_bag(mode="sum")`` per distinct offset — a fused gather-and-sum over the
  pieces laid out channel-major ``[P, B * Hy * Wy]`` — then the sum is added in place into the
  output window. ShiftwiseConv's horizontal branch (``R * nk`` terms, ``nk`` offsets) does
  ``nk`` passes instead of ``R * nk``;
* adjoint (the backward): ``index_add_`` of each term's output-gradient window into the
  piece gradient, in place (a scatter; repeated pieces accumulate).

It is far faster than the reference on CPU (figures: ``benchmarks/README.md``, section
"Shift-add kernels"). Inputs are assumed valid (the public
:func:`shiftwise.ops.shift_add` checks them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["shift_add_adjoint_torch", "shift_add_torch"]


def _window(
    offset: tuple[int, int], out_size: tuple[int, int], y_size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """Output rows ``[top, bottom)`` and columns ``[left, right)`` a term with ``offset`` reaches.

    ``None`` when the term reads nothing inside the pieces (it contributes zero).
    """
    row, col = offset
    top, bottom = max(0, -row), min(out_size[0], y_size[0] - row)
    left, right = max(0, -col), min(out_size[1], y_size[1] - col)
    if top >= bottom or left >= right:
        return None
    return top, bottom, left, right


def shift_add_torch(
    y: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, out_size: tuple[int, int]
) -> torch.Tensor:
    """Shift-add ``y [B, P, Hy, Wy] -> [B, C, H, W]`` (contiguous), grouped by distinct offset."""
    batch, pieces, y_height, y_width = y.shape
    height, width = out_size
    channels = index.shape[0]
    out = y.new_zeros(batch, channels, height, width)
    # Channel-major pieces: row p of the table is piece p over (b, h, w). For channels-last y
    # the reshape is a column-major view, and gathering rows from it is much slower.
    table = y.transpose(0, 1).reshape(pieces, batch * y_height * y_width).contiguous()
    out_t = out.transpose(0, 1)
    index = index.long()
    unique, inverse = torch.unique(offsets, dim=0, return_inverse=True)
    for u, (row, col) in enumerate(unique.tolist()):
        window = _window((row, col), out_size, (y_height, y_width))
        if window is None:
            continue
        top, bottom, left, right = window
        bags = index[:, inverse == u]
        summed = F.embedding_bag(bags, table, mode="sum").view(channels, batch, y_height, y_width)
        out_t[:, :, top:bottom, left:right].add_(
            summed[:, :, top + row : bottom + row, left + col : right + col]
        )
    return out


def shift_add_adjoint_torch(
    grad: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, y_shape: tuple[int, ...]
) -> torch.Tensor:
    """Adjoint of the shift-add: ``grad [B, C, H, W] -> grad_y [B, P, Hy, Wy]`` (scatter-add).

    ``grad_y[b, index[c, t], h + a_t, w + b_t] += grad[b, c, h, w]`` for every in-range term.
    """
    batch, pieces, y_height, y_width = y_shape
    height, width = grad.shape[-2:]
    grad_y = grad.new_zeros(batch, pieces, y_height, y_width)
    columns = index.long().t()
    for t, (row, col) in enumerate(offsets.tolist()):
        window = _window((row, col), (height, width), (y_height, y_width))
        if window is None:
            continue
        top, bottom, left, right = window
        grad_y[:, :, top + row : bottom + row, left + col : right + col].index_add_(
            1, columns[t], grad[:, :, top:bottom, left:right]
        )
    return grad_y
