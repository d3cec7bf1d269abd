"""Depthwise convolution of rectangular kernels, computed in the faster orientation.

PyTorch's depthwise convolution runs at very different speeds for a ``k x L`` ("wide") and an
``L x k`` ("tall") kernel of the same size on CPU: measured on 2 cores at ShiftwiseConv's
stage-1 shape (``[8, 60, 56, 56]``), a 3x51 kernel took 264 ms forward / 431 ms
forward+backward against 7.6 ms / 30 ms for 51x3; 5x51 against 51x5 was 183 ms against
60 ms forward. The same output is obtained from the other orientation on transposed data::

    conv(x, W) == conv(x^T, W^T)^T      (^T swaps the last two dims)

:func:`depthwise_conv2d` takes that route when asked; :func:`wide_kernels_are_slow` is the
measured rule of when to ask (CPU: yes; elsewhere: no, unmeasured).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

__all__ = ["depthwise_conv2d", "full_kernel_taps", "wide_kernels_are_slow"]

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


def wide_kernels_are_slow(device: torch.device) -> bool:
    """Whether a ``k x L`` kernel (``k < L``) should run as ``L x k`` on transposed data.

    True on CPU (see the module docstring for the measurement); False elsewhere.
    """
    return device.type == "cpu"


def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    transposed: bool = False,
) -> torch.Tensor:
    """Depthwise cross-correlation of zero-padded ``x`` with ``weight``.

    Args:
        x: ``[B, C, H, W]``.
        weight: ``[C, 1, kh, kw]``.
        bias: ``[C]`` or ``None``.
        padding: ``(top, bottom, left, right)`` zeros added around ``x`` (non-negative).
        transposed: compute it as ``conv(x^T, weight^T)^T`` (same result, other orientation).

    Returns ``[B, C, H + top + bottom - kh + 1, W + left + right - kw + 1]`` (a transposed
    view when ``transposed``). Kernel taps that can only ever meet the zero padding (a kernel
    larger than the feature map, as at SW-T/SLaK-T stage 3: 47 taps on 14 pixels) are cut
    away first, which changes nothing but the cost.
    """
    if _crop_unreachable_taps:
        weight, padding = _reachable_taps(weight, padding, (x.shape[-2], x.shape[-1]))
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
    top, bottom, left, right = padding
    groups = x.shape[1]
    if top == bottom and left == right:
        return F.conv2d(x, weight, bias, padding=(top, left), groups=groups)
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, groups=groups)
