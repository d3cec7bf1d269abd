"""Functional core: pure tensor functions behind the large-kernel modules."""

from shiftwise.ops.decompose import KernelPieces, decompose_kernel, shift_wise_conv2d
from shiftwise.ops.shift_add import shift_add, shift_add_reference

__all__ = [
    "KernelPieces",
    "decompose_kernel",
    "shift_add",
    "shift_add_reference",
    "shift_wise_conv2d",
]
