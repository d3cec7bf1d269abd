"""SLaK's decomposed large kernel and RepLKNet's dense large kernel."""

from __future__ import annotations

from shiftwise.deprecation import deprecated_names
from shiftwise.layers.conv_bn import DepthwiseConvBN
from shiftwise.layers.parallel_branches import ParallelBranchConv2d
from shiftwise.ops.validation import check_kernel_sizes, check_odd_positive

__all__ = ["RepLKConv2d", "SLaKConv2d"]


class SLaKConv2d(ParallelBranchConv2d):
    """SLaK (ICLR 2023) depthwise operator: ``M x N`` ∥ ``N x M`` ∥ ``s x s``, each conv + BN.

    Args:
        channels: input = output channels ``C``.
        kernel_size: long side ``M`` (odd).
        short_side: short side ``N`` of the two rectangles (odd, ``<= M``).
        small_kernel: side of the small square branch (odd, ``<= M``); ``None`` or ``M``
            drops it, as the official code does when it is not smaller than the big one.
        bn: BatchNorm after each branch (else the convolutions carry biases).

    Branch names follow the official ``LoRA1`` (tall, ``M x N``), ``LoRA2`` (wide) and
    ``small_conv``: here ``tall``, ``wide`` and ``small``. The official merge code is broken
    for this decomposed form (their issue #15); :meth:`inference_module` pads each BN-folded
    kernel to ``M x M`` centred and sums kernels and biases, which is exact.
    """

    branch_names = ("tall", "wide", "small")
    large_kernel_branches = ("tall", "wide")

    def __init__(
        self,
        channels: int,
        kernel_size: int = 51,
        short_side: int = 5,
        small_kernel: int | None = 5,
        bn: bool = True,
    ) -> None:
        check_kernel_sizes(channels, kernel_size, small_kernel)
        check_odd_positive(short_side, "short_side")
        if short_side > kernel_size:
            raise ValueError(
                f"short_side: expected <= kernel_size ({kernel_size}), got {short_side}"
            )
        super().__init__(channels, kernel_size)
        self.short_side = short_side
        self.small_kernel = small_kernel if small_kernel and small_kernel < kernel_size else None
        self.tall = DepthwiseConvBN(channels, (kernel_size, short_side), bn)
        self.wide = DepthwiseConvBN(channels, (short_side, kernel_size), bn)
        if self.small_kernel is not None:
            self.small = DepthwiseConvBN(channels, (self.small_kernel, self.small_kernel), bn)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, short_side={self.short_side}, "
            f"small_kernel={self.small_kernel}"
        )


class RepLKConv2d(ParallelBranchConv2d):
    """RepLKNet-style dense depthwise ``K x K`` conv + BN in parallel with a small ``s x s`` one.

    Args:
        channels: input = output channels ``C``.
        kernel_size: large kernel side ``K`` (odd).
        small_kernel: small branch side (odd, ``<= K``); ``None`` or ``K`` drops it.
        bn: BatchNorm after each branch (else the convolutions carry biases).
    """

    branch_names = ("large", "small")
    large_kernel_branches = ("large",)

    def __init__(
        self,
        channels: int,
        kernel_size: int = 31,
        small_kernel: int | None = 5,
        bn: bool = True,
    ) -> None:
        check_kernel_sizes(channels, kernel_size, small_kernel)
        super().__init__(channels, kernel_size)
        self.small_kernel = small_kernel if small_kernel and small_kernel < kernel_size else None
        self.large = DepthwiseConvBN(channels, (kernel_size, kernel_size), bn)
        if self.small_kernel is not None:
            self.small = DepthwiseConvBN(channels, (self.small_kernel, self.small_kernel), bn)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, small_kernel={self.small_kernel}"


__getattr__ = deprecated_names(__name__, {"LargeKernelConv2d": RepLKConv2d})
