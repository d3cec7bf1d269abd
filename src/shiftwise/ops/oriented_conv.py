"""Depthwise convolution of rectangular kernels in the layout and orientation that run fastest.

PyTorch's CPU depthwise convolution (oneDNN) is far faster on channels-last data, and in
training a wide ``k x L`` kernel is slow to differentiate in either layout. The same output is
obtained from the other orientation on transposed data::

    conv(x, W) == conv(x^T, W^T)^T      (^T swaps the last two dims)

On CPU (oneDNN) channels-last is much faster in every case, and for a wide kernel in training
the tall orientation on transposed data is faster again (figures: ``benchmarks/README.md``,
section "Depthwise convolution layout and orientation"). So on CPU :func:`depthwise_conv2d`
always runs on channels-last data; whether to transpose is the caller's explicit choice
(``transposed=``), for which :func:`transpose_pays` gives the measured rule. On other devices
the layout is left alone (unmeasured).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["conv_kernel", "depthwise_conv2d", "grad_needed", "oriented_input", "transpose_pays"]


def transpose_pays(x: torch.Tensor, weight: torch.Tensor, needs_grad: bool) -> bool:
    """Whether ``conv(x, weight)`` is faster as ``conv(x^T, weight^T)^T``: the measured rule.

    True on CPU for a wide kernel (fewer rows than columns) when ``needs_grad`` (autograd will
    run the backward); see the module docstring.
    """
    rows, cols = weight.shape[-2:]
    return needs_grad and x.device.type == "cpu" and rows < cols


def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    transposed: bool = False,
    crop: bool = True,
) -> torch.Tensor:
    """Depthwise cross-correlation of zero-padded ``x`` with ``weight``.

    Args:
        x: ``[B, C, H, W]``.
        weight: ``[C, 1, kh, kw]``.
        bias: ``[C]`` or ``None``.
        padding: ``(top, bottom, left, right)`` zeros added around ``x`` (non-negative).
        transposed: compute it as ``conv(x^T, weight^T)^T`` (same result, other orientation;
            :func:`transpose_pays` says when it is faster).
        crop: first cut away the kernel taps that can only ever meet the zero padding (a
            kernel larger than the feature map, as at SW-T/SLaK-T stage 3: 47 taps on 14
            pixels), which changes nothing but the cost.

    Returns ``[B, C, H + top + bottom - kh + 1, W + left + right - kw + 1]``, channels-last on
    CPU (a transposed view of channels-last data when ``transposed``), in ``x``'s dtype; under
    ``torch.autocast`` in the autocast dtype (``F.conv2d``'s rule: it casts ``x``, ``weight``
    and ``bias``).
    """
    weight, padding_pair = conv_kernel(
        weight, padding, (x.shape[-2], x.shape[-1]), transposed, crop
    )
    out = F.conv2d(
        oriented_input(x, transposed), weight, bias, padding=padding_pair, groups=x.shape[1]
    )
    return out.transpose(-1, -2) if transposed else out


def oriented_input(x: torch.Tensor, transposed: bool) -> torch.Tensor:
    """``x`` (``x^T`` when ``transposed``) in the layout the depthwise conv runs fastest in:
    channels-last on CPU, as it is elsewhere."""
    if transposed:
        x = x.transpose(-1, -2)
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def conv_kernel(
    weight: torch.Tensor,
    padding: tuple[int, int, int, int],
    size: tuple[int, int],
    transposed: bool = False,
    crop: bool = True,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The kernel :func:`depthwise_conv2d` convolves and its symmetric ``(rows, cols)`` padding.

    ``weight [C, 1, kh, kw]`` with ``padding (top, bottom, left, right)`` on an input of
    ``size (H, W)``: the taps that can only meet the padding cropped (``crop``), the kernel
    transposed when ``transposed`` (it then applies to ``x^T``), and uneven padding made even
    by zero taps on the kernel's short side rather than by padding ``x`` (the conv's own
    padding measured faster than a padded copy on CPU, even at twice the taps;
    ``benchmarks/README.md``, same section). Then ``F.conv2d(x', kernel, padding=(rows,
    cols), groups=C)`` is the result, ``x'`` being ``x`` or ``x^T``.
    """
    if crop:
        weight, padding = _reachable_taps(weight, padding, size)
    if transposed:
        top, bottom, left, right = padding
        weight, padding = weight.transpose(-1, -2), (left, right, top, bottom)
    top, bottom, left, right = padding
    rows, cols = max(top, bottom), max(left, right)
    if (top, left) != (bottom, right):
        weight = F.pad(weight, (cols - left, cols - right, rows - top, rows - bottom))
    return weight, (rows, cols)


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


def grad_needed(*tensors: torch.Tensor) -> bool:
    """Whether autograd records a backward for an op on ``tensors`` (grad mode and a grad input)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
