"""eq-SLaK: any depthwise kernel is a sum of shifted small kernels.

ShiftwiseConv's key observation is that a large ``M x N`` depthwise kernel equals a grid of
``k x k`` pieces, each convolved separately and shifted by a whole number of pixels before
summation. :func:`decompose_kernel` cuts a kernel into such pieces and
:func:`shift_wise_conv2d` runs them (one grouped small convolution followed by the shift-add
of :mod:`shiftwise.ops.shift_add`), reproducing ``F.conv2d(x, weight, padding="same",
groups=C)`` exactly — including PyTorch's convention for even kernel sides, where the extra
padding goes to the bottom/right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shiftwise.ops.shift_add import shift_add
from shiftwise.ops.validation import check_depthwise_input

__all__ = ["KernelPieces", "decompose_kernel", "shift_wise_conv2d"]


@dataclass(frozen=True)
class KernelPieces:
    """A depthwise kernel cut into ``k x k`` pieces.

    Attributes:
        weight: ``[C, P, k, k]`` — piece ``p`` of channel ``c``.
        offsets: ``[P, 2]`` int64 — (row, column) offset of each piece's top-left tap relative
            to the output pixel, so piece ``p`` reads ``x[h + offsets[p, 0] + u, w +
            offsets[p, 1] + v]`` with tap ``weight[c, p, u, v]``.
        kernel_size: ``(M, N)`` of the kernel the pieces came from.
    """

    weight: torch.Tensor
    offsets: torch.Tensor
    kernel_size: tuple[int, int]

    @property
    def small_kernel(self) -> int:
        return self.weight.shape[-1]

    def to_kernel(self) -> torch.Tensor:
        """Reassemble the ``[C, 1, M, N]`` kernel (inverse of :func:`decompose_kernel`)."""
        rows, cols = self.kernel_size
        k = self.small_kernel
        origin_row, origin_col = (rows - 1) // 2, (cols - 1) // 2
        height = int(self.offsets[:, 0].max()) + origin_row + k
        width = int(self.offsets[:, 1].max()) + origin_col + k
        kernel = self.weight.new_zeros(self.weight.shape[0], 1, height, width)
        for p, (row, col) in enumerate(self.offsets.tolist()):
            top, left = row + origin_row, col + origin_col
            kernel[:, 0, top : top + k, left : left + k] += self.weight[:, p]
        return kernel[:, :, :rows, :cols]


def decompose_kernel(weight: torch.Tensor, small_kernel: int) -> KernelPieces:
    """Cut a depthwise kernel ``[C, 1, M, N]`` into ``ceil(M/k) * ceil(N/k)`` pieces of ``k x k``.

    The kernel is zero-padded at the bottom/right to multiples of ``k``; offsets follow
    PyTorch's ``padding="same"`` origin, tap ``(i, j)`` sitting at ``(i - (M-1)//2,
    j - (N-1)//2)``.
    """
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise TypeError(f"weight: expected a floating point tensor, got {type(weight).__name__}")
    if weight.dim() != 4 or weight.shape[1] != 1:
        raise ValueError(
            f"weight: expected a depthwise kernel of shape [C, 1, M, N], got {tuple(weight.shape)}"
        )
    if not isinstance(small_kernel, int) or small_kernel < 1:
        raise ValueError(f"small_kernel: expected a positive integer, got {small_kernel!r}")
    channels, _, rows, cols = weight.shape
    k = small_kernel
    n_rows, n_cols = math.ceil(rows / k), math.ceil(cols / k)
    padded = F.pad(weight[:, 0], (0, n_cols * k - cols, 0, n_rows * k - rows))
    # [C, n_rows, k, n_cols, k] -> [C, n_rows, n_cols, k, k] -> [C, P, k, k]
    pieces = padded.reshape(channels, n_rows, k, n_cols, k).permute(0, 1, 3, 2, 4)
    pieces = pieces.reshape(channels, n_rows * n_cols, k, k)
    block_rows = torch.arange(n_rows).repeat_interleave(n_cols) * k - (rows - 1) // 2
    block_cols = torch.arange(n_cols).repeat(n_rows) * k - (cols - 1) // 2
    offsets = torch.stack([block_rows, block_cols], dim=1)
    return KernelPieces(pieces.contiguous(), offsets, (rows, cols))


def shift_wise_conv2d(x: torch.Tensor, pieces: KernelPieces) -> torch.Tensor:
    """Depthwise convolution of ``x`` ``[B, C, H, W]`` with a kernel given as shifted pieces.

    Computes one grouped ``k x k`` convolution producing all ``C * P`` pieces on a padded
    input, then shift-adds them: the result equals ``F.conv2d(x, pieces.to_kernel(),
    padding="same", groups=C)``, shape ``[B, C, H, W]``, in ``x``'s dtype (the pieces' must
    match), or under ``torch.autocast`` in the autocast dtype (the small convolution casts
    both, the shift-add keeps its input's dtype).
    """
    channels, n_pieces, k, _ = pieces.weight.shape
    check_depthwise_input(x, channels)
    if pieces.weight.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"pieces: weight dtype {pieces.weight.dtype} does not match x dtype {x.dtype}"
        )
    height, width = x.shape[-2:]
    offsets = pieces.offsets.to(torch.int64)
    pad_top = max(0, -int(offsets[:, 0].min()))
    pad_left = max(0, -int(offsets[:, 1].min()))
    pad_bottom = max(0, int(offsets[:, 0].max()) + k - 1)
    pad_right = max(0, int(offsets[:, 1].max()) + k - 1)
    padded = F.pad(x, (pad_left, pad_right, pad_top, pad_bottom))
    y = F.conv2d(padded, pieces.weight.reshape(channels * n_pieces, 1, k, k), groups=channels)
    index = torch.arange(channels * n_pieces, device=x.device).reshape(channels, n_pieces)
    shifted = (offsets + torch.tensor([pad_top, pad_left])).to(x.device)
    return shift_add(y, index, shifted, (height, width))
