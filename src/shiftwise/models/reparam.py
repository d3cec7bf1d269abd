"""Whole-model re-parameterisation: every operator switched to its inference form."""

from __future__ import annotations

from torch import nn

from shiftwise.layers.interface import LargeKernelOperator

__all__ = ["reparameterize"]


def reparameterize(model: nn.Module) -> nn.Module:
    """Call ``reparameterize()`` on every sub-module that has one, in place; returns ``model``.

    Large-kernel operators (any :class:`~shiftwise.layers.LargeKernelOperator`) fold their BNs
    and parallel branches, then blocks fold what they can (e.g. ``gamma`` into ``fc2``); the
    eval-mode output of the model is unchanged. Calling it twice is harmless.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    modules = list(model.modules())
    operators = [module for module in modules if isinstance(module, LargeKernelOperator)]
    others = [
        module
        for module in modules
        if not isinstance(module, LargeKernelOperator)
        and callable(getattr(module, "reparameterize", None))
    ]
    for module in operators + others:
        module.reparameterize()
    return model
