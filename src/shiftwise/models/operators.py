"""The depthwise token mixers a network can use, built by name.

``build_operator(name, channels, kernel_size, **kwargs)`` returns a ``[B, C, H, W] ->
[B, C, H, W]`` module:

========== ======================================= =======================================
name       module                                  kwargs (defaults = released configs)
========== ======================================= =======================================
shiftwise  :class:`~shiftwise.layers.ShiftWiseConv2d`  small_kernel 3, ghost_ratio 0.23,
                                                    n_paths 2, n_shuffles 4, bn, seed
slak       :class:`~shiftwise.layers.SLaKConv2d`   short_side 5, small_kernel 5, bn
dense      :class:`~shiftwise.layers.RepLKConv2d` small_kernel 5, bn
conv       plain depthwise ``nn.Conv2d`` with bias (ConvNeXt)
========== ======================================= =======================================
"""

from __future__ import annotations

from typing import Any

from torch import nn

from shiftwise.layers import RepLKConv2d, ShiftWiseConv2d, SLaKConv2d
from shiftwise.ops.validation import check_odd_positive

__all__ = ["OPERATORS", "build_operator"]

OPERATORS = ("shiftwise", "slak", "dense", "conv")


def build_operator(name: str, channels: int, kernel_size: int, **kwargs: Any) -> nn.Module:
    """Depthwise operator ``name`` over ``channels`` with big kernel ``kernel_size``."""
    if name == "shiftwise":
        return ShiftWiseConv2d(channels, kernel_size, **kwargs)
    if name == "slak":
        return SLaKConv2d(channels, kernel_size, **kwargs)
    if name == "dense":
        return RepLKConv2d(channels, kernel_size, **kwargs)
    if name == "conv":
        if kwargs:
            raise TypeError(f"operator_kwargs: operator 'conv' takes none, got {sorted(kwargs)}")
        check_odd_positive(kernel_size, "kernel_size")
        return nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
    raise ValueError(f"operator: expected one of {OPERATORS}, got {name!r}")
