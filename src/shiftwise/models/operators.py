"""The depthwise token mixers a network can use: a registry from name to builder.

``build_operator(name, channels, kernel_size, **kwargs)`` returns a ``[B, C, H, W] ->
[B, C, H, W]`` module built by the builder registered under ``name``. The blocks
(:class:`~shiftwise.models.MacroNet`, ``create_model(operator=name)``), the operator
benchmarks and ``shiftwise info`` all build through it, so a new operator is one class and
one :func:`register_operator` call (or decorator), in any module, with no edit in shiftwise:

.. code-block:: python

    @register_operator("mine")
    class MyConv(LargeKernelOperator):
        def __init__(self, channels: int, kernel_size: int, **kwargs): ...

    model = create_model("sw_atto", operator="mine")

Built in (kwargs defaults = released configs):

========== ======================================= =======================================
name       module                                  kwargs
========== ======================================= =======================================
shiftwise  :class:`~shiftwise.layers.ShiftWiseConv2d`  small_kernel 3, ghost_ratio 0.23,
                                                    n_paths 2, n_shuffles 4, bn, seed
slak       :class:`~shiftwise.layers.SLaKConv2d`   short_side 5, small_kernel 5, bn
dense      :class:`~shiftwise.layers.RepLKConv2d` small_kernel 5, bn
conv       plain depthwise ``nn.Conv2d`` with bias (ConvNeXt)
========== ======================================= =======================================

A builder that returns a :class:`~shiftwise.layers.LargeKernelOperator` gets sparse training,
complexity counting, re-parameterisation and export through that interface
(:mod:`shiftwise.layers.interface`); any other module is kept as it is by
:func:`~shiftwise.reparameterize`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from shiftwise.layers import RepLKConv2d, ShiftWiseConv2d, SLaKConv2d
from shiftwise.ops.validation import check_odd_positive

__all__ = [
    "OperatorBuilder",
    "build_operator",
    "list_operators",
    "operator_builder",
    "register_operator",
]

OperatorBuilder = Callable[..., nn.Module]
"""``builder(channels, kernel_size, **kwargs) -> nn.Module``: a class or a function."""

_Builder = TypeVar("_Builder", bound=OperatorBuilder)

_OPERATORS: dict[str, OperatorBuilder] = {}


def register_operator(
    name: str, builder: _Builder | None = None
) -> _Builder | Callable[[_Builder], _Builder]:
    """Register ``builder`` as operator ``name``; returns it (without ``builder``: a decorator).

    ``name`` is what ``create_model(operator=name)`` and model configs name. Registering the
    same builder again is a no-op; another builder under a taken name is a ``ValueError``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name: expected an identifier, got {name!r}")

    def add(new: _Builder) -> _Builder:
        if not callable(new):
            raise TypeError(f"builder: expected a class or function, got {new!r}")
        known = _OPERATORS.get(name)
        if known is not None and known is not new:
            raise ValueError(f"name: operator {name!r} is already registered as {known!r}")
        _OPERATORS[name] = new
        return new

    return add if builder is None else add(builder)


def list_operators() -> list[str]:
    """Names of the registered operators, in registration order (built-ins first)."""
    return list(_OPERATORS)


def operator_builder(name: str) -> OperatorBuilder:
    """The class or function registered as operator ``name``."""
    builder = _OPERATORS.get(name) if isinstance(name, str) else None
    if builder is None:
        raise ValueError(f"operator: expected one of {list_operators()}, got {name!r}")
    return builder


def build_operator(name: str, channels: int, kernel_size: int, **kwargs: Any) -> nn.Module:
    """Depthwise operator ``name`` over ``channels`` with big kernel ``kernel_size``."""
    return operator_builder(name)(channels, kernel_size, **kwargs)


def _depthwise_conv(channels: int, kernel_size: int, **kwargs: Any) -> nn.Conv2d:
    """ConvNeXt's plain depthwise ``kernel_size`` conv with bias (no options)."""
    if kwargs:
        raise TypeError(f"operator_kwargs: operator 'conv' takes none, got {sorted(kwargs)}")
    check_odd_positive(kernel_size, "kernel_size")
    return nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)


register_operator("shiftwise", ShiftWiseConv2d)
register_operator("slak", SLaKConv2d)
register_operator("dense", RepLKConv2d)
register_operator("conv", _depthwise_conv)
