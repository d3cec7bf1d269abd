"""Triton kernels of the shift-add and its adjoint (CUDA; Triton's interpreter runs them on CPU).

Triton is optional (``pip install shiftwise[triton]``): :func:`triton_available` says whether
it imports, and nothing here is imported by the library unless it does.

* forward: one program per (batch, output channel, block of ``BLOCK`` output pixels); it walks
  the ``T`` terms, gathers the shifted piece values with a bounds mask (zero padding) and
  accumulates in registers (float32; float64 for float64 input) — one pass over the
  output, no temporaries;
* adjoint: the same walk, scattering the output gradient onto the pieces with
  ``tl.atomic_add`` (pieces read by several terms accumulate).

Set ``TRITON_INTERPRET=1`` before importing Triton to run the kernels on CPU tensors (tests).
"""

from __future__ import annotations

import functools
import importlib.util

import torch

__all__ = ["shift_add_adjoint_triton", "shift_add_triton", "triton_available"]

_BLOCK = 256


def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _kernels():
    """Build the two ``@triton.jit`` kernels on first use (imports Triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def forward_kernel(
        y_ptr, index_ptr, offsets_ptr, out_ptr,
        n_pieces, n_channels, n_terms, y_height, y_width, height, width,
        BLOCK: tl.constexpr, ACC: tl.constexpr,
    ):  # fmt: skip
        plane = tl.program_id(0)
        batch = plane // n_channels
        channel = plane % n_channels
        pixel = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = pixel < height * width
        h = pixel // width
        w = pixel % width
        acc = tl.zeros([BLOCK], dtype=ACC)
        for t in range(n_terms):
            piece = tl.load(index_ptr + channel * n_terms + t).to(tl.int64)
            row = tl.load(offsets_ptr + 2 * t)
            col = tl.load(offsets_ptr + 2 * t + 1)
            src_h = h + row
            src_w = w + col
            mask = inside & (src_h >= 0) & (src_h < y_height) & (src_w >= 0) & (src_w < y_width)
            base = (batch * n_pieces + piece) * y_height * y_width
            value = tl.load(y_ptr + base + src_h * y_width + src_w, mask=mask, other=0.0)
            acc += value.to(ACC)
        out_base = (batch * n_channels + channel) * height * width
        tl.store(out_ptr + out_base + pixel, acc.to(out_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def adjoint_kernel(
        grad_ptr, index_ptr, offsets_ptr, grad_y_ptr,
        n_pieces, n_channels, n_terms, y_height, y_width, height, width,
        BLOCK: tl.constexpr, ACC: tl.constexpr,
    ):  # fmt: skip
        plane = tl.program_id(0)
        batch = plane // n_channels
        channel = plane % n_channels
        pixel = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = pixel < height * width
        h = pixel // width
        w = pixel % width
        grad_base = (batch * n_channels + channel) * height * width
        grad = tl.load(grad_ptr + grad_base + pixel, mask=inside, other=0.0)
        for t in range(n_terms):
            piece = tl.load(index_ptr + channel * n_terms + t).to(tl.int64)
            row = tl.load(offsets_ptr + 2 * t)
            col = tl.load(offsets_ptr + 2 * t + 1)
            dst_h = h + row
            dst_w = w + col
            mask = inside & (dst_h >= 0) & (dst_h < y_height) & (dst_w >= 0) & (dst_w < y_width)
            base = (batch * n_pieces + piece) * y_height * y_width
            tl.atomic_add(grad_y_ptr + base + dst_h * y_width + dst_w, grad, mask=mask)

    return forward_kernel, adjoint_kernel


def _launch(
    kernel,
    source: torch.Tensor,
    index: torch.Tensor,
    offsets: torch.Tensor,
    target: torch.Tensor,
    y_shape: tuple[int, ...],
    out_size: tuple[int, int],
) -> None:
    """Run ``kernel`` over the grid of output pixels ``(B * C, ceil(H * W / BLOCK))``."""
    import triton.language as tl

    batch, pieces, y_height, y_width = y_shape
    channels, terms = index.shape
    height, width = out_size
    accumulate = tl.float64 if source.dtype == torch.float64 else tl.float32
    grid = (batch * channels, -(-(height * width) // _BLOCK))
    kernel[grid](
        source, index.contiguous(), offsets.contiguous(), target,
        pieces, channels, terms, y_height, y_width, height, width,
        BLOCK=_BLOCK, ACC=accumulate,
    )  # fmt: skip


def shift_add_triton(
    y: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, out_size: tuple[int, int]
) -> torch.Tensor:
    """Shift-add ``y [B, P, Hy, Wy] -> [B, C, H, W]`` with the Triton forward kernel."""
    forward_kernel, _ = _kernels()
    y = y.contiguous()
    out = y.new_empty(y.shape[0], index.shape[0], *out_size)
    if out.numel():
        _launch(forward_kernel, y, index, offsets, out, tuple(y.shape), out_size)
    return out


def shift_add_adjoint_triton(
    grad: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, y_shape: tuple[int, ...]
) -> torch.Tensor:
    """Adjoint ``grad [B, C, H, W] -> grad_y [B, P, Hy, Wy]`` with the Triton scatter kernel.

    Accumulates in float32 (float64 for float64 input) with atomics, then casts back.
    """
    _, adjoint_kernel = _kernels()
    grad = grad.contiguous()
    accumulate = grad.dtype if grad.dtype == torch.float64 else torch.float32
    grad_y = torch.zeros(y_shape, dtype=accumulate, device=grad.device)
    if grad.numel():
        _launch(
            adjoint_kernel, grad.to(accumulate), index, offsets, grad_y, y_shape, grad.shape[-2:]
        )
    return grad_y.to(grad.dtype)
