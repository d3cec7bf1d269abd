"""Large-kernel depthwise operators as drop-in ``nn.Module``s."""

from shiftwise.layers.shiftwise_conv import PermutedDepthwiseConv2d, ShiftWiseConv2d
from shiftwise.layers.slak_conv import LargeKernelConv2d, SLaKConv2d

__all__ = ["LargeKernelConv2d", "PermutedDepthwiseConv2d", "SLaKConv2d", "ShiftWiseConv2d"]
