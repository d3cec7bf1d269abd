"""Depthwise convolution followed by BatchNorm, and the algebra that folds BN into the conv."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DepthwiseConvBN",
    "bn_scale_shift",
    "center_pad_kernel",
    "count_batch",
]


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as ``y = x * scale + shift``; returns ``(scale [C], shift [C])``."""
    std = (bn.running_var + bn.eps).sqrt()
    weight = bn.weight if bn.affine else torch.ones_like(std)
    bias = bn.bias if bn.affine else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean * scale


def count_batch(norms: Sequence[nn.BatchNorm2d]) -> float:
    """Count a training batch in each of ``norms`` as ``nn.BatchNorm2d.forward`` does, and
    return the running-statistics factor they share: ``momentum``, or ``1 /
    num_batches_tracked`` when ``momentum`` is None (``ValueError`` if the norms' differ).

    For training-mode norms that one fused computation runs together
    (:func:`shiftwise.ops.conv_bn_sum.conv_bn_sum`).
    """
    factors = set()
    for norm in norms:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            factors.add(1.0 / float(norm.num_batches_tracked))
        else:
            factors.add(norm.momentum)
    if len(factors) != 1:
        raise ValueError(f"norms: expected one running-statistics factor, got {sorted(factors)}")
    return factors.pop()


def center_pad_kernel(kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad an odd-sided kernel ``[..., kh, kw]`` to ``size`` keeping its centre tap centred."""
    pad_rows, pad_cols = size[0] - kernel.shape[-2], size[1] - kernel.shape[-1]
    if pad_rows < 0 or pad_cols < 0 or pad_rows % 2 or pad_cols % 2:
        raise ValueError(
            f"size: cannot centre a kernel of size {tuple(kernel.shape[-2:])} in {tuple(size)}"
        )
    return F.pad(kernel, (pad_cols // 2, pad_cols // 2, pad_rows // 2, pad_rows // 2))


class DepthwiseConvBN(nn.Module):
    """Depthwise ``kh x kw`` convolution ("same" padding, odd sides) followed by BatchNorm.

    With ``bn=False`` the convolution carries a bias instead. Input and output ``[B, C, H, W]``.
    """

    def __init__(self, channels: int, kernel_size: tuple[int, int], bn: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            channels,
            channels,
            kernel_size,
            padding=(kernel_size[0] // 2, kernel_size[1] // 2),
            groups=channels,
            bias=not bn,
        )
        self.bn = nn.BatchNorm2d(channels) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.bn(x) if self.bn is not None else x

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode ``(weight [C, 1, kh, kw], bias [C])`` of conv and BN folded together."""
        weight = self.conv.weight
        if self.bn is None:
            return weight, self.conv.bias
        scale, shift = bn_scale_shift(self.bn)
        return weight * scale.reshape(-1, 1, 1, 1), shift
