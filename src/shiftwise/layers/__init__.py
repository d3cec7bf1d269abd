"""Large-kernel depthwise operators as drop-in ``nn.Module``s, their inference forms and their
common interface."""

import warnings

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
from shiftwise.layers.slak_conv import LargeKernelConv2d, SLaKConv2d

__all__ = [
    "DEPLOY_FORMS",
    "DenseDepthwiseConv2d",
    "DepthwiseConvSum",
    "DepthwiseOperator",
    "KernelWeights",
    "LargeKernelConv2d",
    "LargeKernelOperator",
    "SLaKConv2d",
    "ShiftAddPieces",
    "ShiftWiseConv2d",
    "StripDepthwiseConv2d",
]

_DEPRECATED = {"PermutedDepthwiseConv2d": DenseDepthwiseConv2d}


def __getattr__(name: str) -> object:
    if name in _DEPRECATED:
        new = _DEPRECATED[name]
        warnings.warn(
            f"shiftwise.layers.{name} is deprecated, use {new.__name__}",
            DeprecationWarning,
            stacklevel=2,
        )
        return new
    raise AttributeError(f"module 'shiftwise.layers' has no attribute {name!r}")
