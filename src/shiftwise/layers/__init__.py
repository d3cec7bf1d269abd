"""Large-kernel depthwise operators as drop-in ``nn.Module``s, and their common interface."""

from shiftwise.layers.interface import KernelWeights, LargeKernelOperator
from shiftwise.layers.shiftwise_conv import PermutedDepthwiseConv2d, ShiftWiseConv2d
from shiftwise.layers.slak_conv import LargeKernelConv2d, SLaKConv2d

__all__ = [
    "KernelWeights",
    "LargeKernelConv2d",
    "LargeKernelOperator",
    "PermutedDepthwiseConv2d",
    "SLaKConv2d",
    "ShiftWiseConv2d",
]
