"""Argument checks shared by the functional ops and the modules (one clear message each)."""

from __future__ import annotations

import torch

__all__ = [
    "check_depthwise_input",
    "check_kernel_sizes",
    "check_odd_positive",
    "check_positive_int",
]


def check_depthwise_input(x: object, channels: int, name: str = "x") -> None:
    """Raise unless ``x`` is a floating point ``[B, channels, H, W]`` tensor with ``H, W >= 1``.

    A ``torch.fx.Proxy`` (symbolic tracing: no dtype or shape to check) passes.
    """
    if isinstance(x, torch.fx.Proxy):
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got dtype {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D tensor [B, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{name}: expected {channels} channels (dim 1), got shape {tuple(x.shape)}"
        )
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name}: expected H, W >= 1, got shape {tuple(x.shape)}")


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is a positive ``int`` (not bool), else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return value


def check_odd_positive(value: object, name: str) -> int:
    """Return ``value`` if it is an odd positive ``int``, else raise naming ``name``."""
    check_positive_int(value, name)
    if value % 2 == 0:
        raise ValueError(f"{name}: expected an odd kernel size, got {value}")
    return value


def check_kernel_sizes(channels: object, kernel_size: object, small_kernel: object) -> None:
    """The rules shared by every large-kernel operator, each error naming its argument.

    ``channels`` a positive int; ``kernel_size`` an odd positive int; ``small_kernel`` an odd
    positive int not larger than ``kernel_size`` (``None`` allowed: the operator has none).
    """
    check_positive_int(channels, "channels")
    check_odd_positive(kernel_size, "kernel_size")
    if small_kernel is None:
        return
    check_odd_positive(small_kernel, "small_kernel")
    if small_kernel > kernel_size:
        raise ValueError(
            f"small_kernel: expected <= kernel_size ({kernel_size}), got {small_kernel}"
        )
