"""Large-kernel depthwise operators as drop-in ``nn.Module``s, their inference forms and their
common interface."""

from shiftwise.deprecation import deprecated_names
from shiftwise.layers.inference import (
    DenseDepthwiseConv2d,
    DepthwiseConvSum,
    ShiftAddPieces,
    StripDepthwiseConv2d,
)
from shiftwise.layers.interface import (
    DEPLOY_FORMS,
    DepthwiseOperator,
    KernelWeights,
    LargeKernelOperator,
)
from shiftwise.layers.shiftwise_conv import ShiftWiseConv2d
from shiftwise.layers.slak_conv import RepLKConv2d, SLaKConv2d

__all__ = [
    "DEPLOY_FORMS",
    "DenseDepthwiseConv2d",
    "DepthwiseConvSum",
    "DepthwiseOperator",
    "KernelWeights",
    "LargeKernelOperator",
    "RepLKConv2d",
    "SLaKConv2d",
    "ShiftAddPieces",
    "ShiftWiseConv2d",
    "StripDepthwiseConv2d",
]

__getattr__ = deprecated_names(
    __name__,
    {"PermutedDepthwiseConv2d": DenseDepthwiseConv2d, "LargeKernelConv2d": RepLKConv2d},
)
