"""Base class of operators made of parallel depthwise conv+BN branches (SLaK, RepLKNet)."""

from __future__ import annotations

import torch
from torch import nn

from shiftwise.layers.conv_bn import DepthwiseConvBN, center_pad_kernel
from shiftwise.ops.validation import check_depthwise_input

__all__ = ["ParallelBranchConv2d"]


class ParallelBranchConv2d(nn.Module):
    """Sum of depthwise conv+BN branches whose kernels all fit, centred, in ``K x K``.

    Subclasses create their branches as :class:`DepthwiseConvBN` attributes and list their
    names in ``branch_names``. In eval mode the sum is one depthwise ``K x K`` convolution with
    bias (:meth:`equivalent_kernel`), which :meth:`reparameterize` installs as ``reparam``.
    """

    branch_names: tuple[str, ...] = ()

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.reparam: nn.Conv2d | None = None

    def branches(self) -> list[DepthwiseConvBN]:
        """The training-time branches still present (none after :meth:`reparameterize`)."""
        return [getattr(self, name) for name in self.branch_names if hasattr(self, name)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Depthwise large-kernel convolution, ``[B, C, H, W] -> [B, C, H, W]``."""
        check_depthwise_input(x, self.channels)
        if self.reparam is not None:
            return self.reparam(x)
        out = None
        for branch in self.branches():
            y = branch(x)
            out = y if out is None else out + y
        return out

    @property
    def deployed(self) -> bool:
        return self.reparam is not None

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [C, 1, K, K], bias [C])`` of the single conv equal to this module in eval."""
        if self.reparam is not None:
            return self.reparam.weight, self.reparam.bias
        size = (self.kernel_size, self.kernel_size)
        weight, bias = 0, 0
        for branch in self.branches():
            branch_weight, branch_bias = branch.fused()
            weight = weight + center_pad_kernel(branch_weight, size)
            bias = bias + branch_bias
        return weight, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one ``K x K`` depthwise conv with bias (eval output kept)."""
        if self.reparam is not None:
            return
        weight, bias = self.equivalent_kernel()
        conv = nn.Conv2d(
            self.channels,
            self.channels,
            self.kernel_size,
            padding=self.kernel_size // 2,
            groups=self.channels,
            bias=True,
        ).to(device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        for name in self.branch_names:
            if hasattr(self, name):
                delattr(self, name)
        self.reparam = conv
