"""Depthwise convolution of rectangular kernels in the layout and orientation that run fastest.

PyTorch's CPU depthwise convolution (oneDNN) is far faster on channels-last data, and in
training a wide ``k x L`` kernel is slow to differentiate in either layout. The same output is
obtained from the other orientation on transposed data::

    conv(x, W) == conv(x^T, W^T)^T      (^T swaps the last two dims)

Measured on 2 CPU cores, one thread, batch 8 (``[8, C, 56, 56]`` unless noted), ms:

================  ===================  ===================  ===================
kernel (C)        inference NCHW / CL  fwd+bwd NCHW / CL    fwd+bwd tall on CL
================  ===================  ===================  ===================
3 x 51 (60)       153.9 / 6.9          389.1 / 272.7        29.2
51 x 3 (60)       8.3 / 8.5            36.4 / 32.9          (is tall)
5 x 51 (104)      400.5 / 16.4         1013.9 / 671.8       275.7
51 x 5 (104)      27.9 / 19.2          507.7 / 213.2        (is tall)
3 x 27 (246, 14)  19.8 / 0.8           41.4 / 17.3          15.5
================  ===================  ===================  ===================

So on CPU :func:`depthwise_conv2d` always runs on channels-last data, and turns a wide kernel
tall on transposed data only when gradients are needed (:func:`runs_transposed`). On other
devices it leaves the layout alone and does not transpose (unmeasured).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

__all__ = ["depthwise_conv2d", "full_kernel_taps", "runs_transposed"]

# A plain module flag rather than a ContextVar: torch.compile guards on it without graph breaks.
_crop_unreachable_taps = True


@contextmanager
def full_kernel_taps() -> Iterator[None]:
    """Within this context, run every kernel at its full size (no cropping of taps that only
    meet padding). Results are identical; complexity counting uses it to report the MACs of
    the nominal kernels, as the papers do.
    """
    global _crop_unreachable_taps
    previous, _crop_unreachable_taps = _crop_unreachable_taps, False
    try:
        yield
    finally:
        _crop_unreachable_taps = previous


def runs_transposed(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`depthwise_conv2d` computes ``conv(x, weight)`` as ``conv(x^T, weight^T)^T``.

    True on CPU for a wide kernel (fewer rows than columns) when autograd will need its
    backward; see the module docstring for the measurements.
    """
    rows, cols = weight.shape[-2:]
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return x.device.type == "cpu" and rows < cols and needs_grad


def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    transposed: bool | None = None,
) -> torch.Tensor:
    """Depthwise cross-correlation of zero-padded ``x`` with ``weight``.

    Args:
        x: ``[B, C, H, W]``.
        weight: ``[C, 1, kh, kw]``.
        bias: ``[C]`` or ``None``.
        padding: ``(top, bottom, left, right)`` zeros added around ``x`` (non-negative).
        transposed: compute it as ``conv(x^T, weight^T)^T`` (same result, other orientation);
            ``None`` decides by :func:`runs_transposed`.

    Returns ``[B, C, H + top + bottom - kh + 1, W + left + right - kw + 1]``, channels-last on
    CPU (a transposed view of channels-last data when ``transposed``). Kernel taps that can
    only ever meet the zero padding (a kernel larger than the feature map, as at SW-T/SLaK-T
    stage 3: 47 taps on 14 pixels) are cut away first, which changes nothing but the cost.
    """
    if _crop_unreachable_taps:
        weight, padding = _reachable_taps(weight, padding, (x.shape[-2], x.shape[-1]))
    if transposed is None:
        transposed = runs_transposed(x, weight)
    if transposed:
        top, bottom, left, right = padding
        out = _padded_conv(
            x.transpose(-1, -2), weight.transpose(-1, -2), bias, (left, right, top, bottom)
        )
        return out.transpose(-1, -2)
    return _padded_conv(x, weight, bias, padding)


def _reachable_taps(
    weight: torch.Tensor, padding: tuple[int, int, int, int], size: tuple[int, int]
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Crop ``weight`` to the taps that reach the input of ``size``; adjust ``padding``."""
    top, bottom, left, right = padding
    (rows, cols), (height, width) = weight.shape[-2:], size
    out_height = height + top + bottom - rows + 1
    out_width = width + left + right - cols + 1
    row0, row1 = max(0, top - out_height + 1), min(rows - 1, top + height - 1)
    col0, col1 = max(0, left - out_width + 1), min(cols - 1, left + width - 1)
    if row0 > row1 or col0 > col1 or (row0, row1, col0, col1) == (0, rows - 1, 0, cols - 1):
        return weight, padding
    cropped = weight[..., row0 : row1 + 1, col0 : col1 + 1]
    return cropped, (top - row0, bottom - (rows - 1 - row1), left - col0, right - (cols - 1 - col1))


def _padded_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int, int, int],
) -> torch.Tensor:
    """Depthwise conv of ``x`` zero-padded by ``(top, bottom, left, right)``.

    Uneven padding becomes even by zero taps added to the kernel's short side rather than by
    padding ``x``: the conv's own padding is faster than a padded copy even at twice the taps
    (CPU, channels-last, 3x51 on ``[2, 122, 28, 28]`` padded 10/40: 2.00 ms against 0.83 ms).
    In training the backward favours either form depending on the shape; over a whole
    network they measured alike (sw_tiny fwd+bwd, batch 4, 160 px: 1.69 s against 1.85 s).
    """
    top, bottom, left, right = padding
    rows, cols = max(top, bottom), max(left, right)
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    if (top, left) != (bottom, right):
        weight = F.pad(weight, (cols - left, cols - right, rows - top, rows - bottom))
    return F.conv2d(x, weight, bias, padding=(rows, cols), groups=x.shape[1])
