"""The shift-add as ``torch.library`` custom ops: ``shiftwise::shift_add`` and its adjoint.

Registering the op (with a fake kernel for shape propagation and an autograd formula) lets
``torch.compile`` trace models through it without graph breaks, and picks the kernel by
device:

========== ============================================================================
device     kernel
========== ============================================================================
cpu        :func:`~shiftwise.ops.shift_add_torch.shift_add_torch` (grouped by offset,
           fused gather-sum, in-place accumulation)
cuda       Triton (:mod:`shiftwise.ops.shift_add_triton`) when installed, else the torch
           kernel
other      the torch kernel
========== ============================================================================

The backward of ``shift_add`` is ``shift_add_adjoint`` (a scatter of the output gradient
onto the pieces) and the backward of the adjoint is ``shift_add`` again, so double backward
works. ``index`` and ``offsets`` are integer tables and get no gradient.

Dtypes: both ops run in their input's dtype and return it (the Triton kernels accumulate in
float32, float64 for float64 input). Under ``torch.autocast`` (:mod:`shiftwise.ops.autocast`)
they keep it too, as autocast leaves gathers and sums alone: fed by a convolution, the
pieces arrive in the autocast dtype and the output is in it; the kernels run with autocast
off, so no op inside changes the dtype.
"""

from __future__ import annotations

import torch

from shiftwise.ops.autocast import register_autocast, without_autocast
from shiftwise.ops.shift_add_torch import shift_add_adjoint_torch, shift_add_torch
from shiftwise.ops.shift_add_triton import (
    shift_add_adjoint_triton,
    shift_add_triton,
    triton_available,
)

__all__ = ["shift_add_adjoint_op", "shift_add_op"]


@torch.library.custom_op("shiftwise::shift_add", mutates_args=())
def shift_add_op(
    y: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """``out [B, C, height, width] = sum_t y[b, index[c, t], h + a_t, w + b_t]`` (zero outside)."""
    return shift_add_torch(y, index, offsets, (height, width))


@shift_add_op.register_kernel("cuda")
def _shift_add_cuda(
    y: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    if triton_available():
        return shift_add_triton(y, index, offsets, (height, width))
    return shift_add_torch(y, index, offsets, (height, width))


@shift_add_op.register_fake
def _shift_add_fake(
    y: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    return y.new_empty(y.shape[0], index.shape[0], height, width)


@torch.library.custom_op("shiftwise::shift_add_adjoint", mutates_args=())
def shift_add_adjoint_op(
    grad: torch.Tensor,
    index: torch.Tensor,
    offsets: torch.Tensor,
    pieces: int,
    y_height: int,
    y_width: int,
) -> torch.Tensor:
    """``grad_y [B, pieces, y_height, y_width]``: the shift-add's adjoint applied to ``grad``."""
    shape = (grad.shape[0], pieces, y_height, y_width)
    return shift_add_adjoint_torch(grad, index, offsets, shape)


@shift_add_adjoint_op.register_kernel("cuda")
def _shift_add_adjoint_cuda(
    grad: torch.Tensor,
    index: torch.Tensor,
    offsets: torch.Tensor,
    pieces: int,
    y_height: int,
    y_width: int,
) -> torch.Tensor:
    shape = (grad.shape[0], pieces, y_height, y_width)
    if triton_available():
        return shift_add_adjoint_triton(grad, index, offsets, shape)
    return shift_add_adjoint_torch(grad, index, offsets, shape)


@shift_add_adjoint_op.register_fake
def _shift_add_adjoint_fake(
    grad: torch.Tensor,
    index: torch.Tensor,
    offsets: torch.Tensor,
    pieces: int,
    y_height: int,
    y_width: int,
) -> torch.Tensor:
    return grad.new_empty(grad.shape[0], pieces, y_height, y_width)


def _setup_forward(ctx, inputs, output) -> None:
    y, index, offsets, _, _ = inputs
    ctx.save_for_backward(index, offsets)
    ctx.y_size = (y.shape[1], y.shape[2], y.shape[3])


@without_autocast
def _backward_forward(ctx, grad: torch.Tensor):
    index, offsets = ctx.saved_tensors
    grad_y = shift_add_adjoint_op(grad.contiguous(), index, offsets, *ctx.y_size)
    return grad_y, None, None, None, None


def _setup_adjoint(ctx, inputs, output) -> None:
    grad, index, offsets, _, _, _ = inputs
    ctx.save_for_backward(index, offsets)
    ctx.out_size = (grad.shape[2], grad.shape[3])


@without_autocast
def _backward_adjoint(ctx, grad_y: torch.Tensor):
    index, offsets = ctx.saved_tensors
    grad = shift_add_op(grad_y.contiguous(), index, offsets, *ctx.out_size)
    return grad, None, None, None, None, None


def _keep_dtypes(dtype: torch.dtype, *args) -> tuple:
    """The shift-add's arguments unchanged: it runs in its input's dtype under autocast too."""
    return args


shift_add_op.register_autograd(_backward_forward, setup_context=_setup_forward)
shift_add_adjoint_op.register_autograd(_backward_adjoint, setup_context=_setup_adjoint)
register_autocast("shiftwise::shift_add", _keep_dtypes)
register_autocast("shiftwise::shift_add_adjoint", _keep_dtypes)
