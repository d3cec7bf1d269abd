"""Whole-model re-parameterisation: every operator switched to its inference form."""

from __future__ import annotations

from torch import nn

__all__ = ["reparameterize"]


def reparameterize(model: nn.Module) -> nn.Module:
    """Call ``reparameterize()`` on every sub-module that has one, in place; returns ``model``.

    Operators (ShiftWiseConv2d, SLaKConv2d, LargeKernelConv2d) fold their BNs and parallel
    branches; the eval-mode output of the model is unchanged. Calling it twice is harmless.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    targets = [
        module for module in model.modules() if callable(getattr(module, "reparameterize", None))
    ]
    for module in targets:
        module.reparameterize()
    return model
