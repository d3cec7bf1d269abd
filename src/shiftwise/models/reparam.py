"""Whole-model re-parameterisation: every block and operator replaced by its inference form."""

from __future__ import annotations

from torch import nn

from shiftwise.layers.interface import DEPLOY_FORMS, LargeKernelOperator, check_deploy_form
from shiftwise.models.deployed_blocks import DeployableBlock

__all__ = ["reparameterize"]


def reparameterize(model: nn.Module, form: str = "auto") -> nn.Module:
    """Replace, in place, every block and large-kernel operator of ``model`` by its inference
    module; returns ``model`` (or, when ``model`` itself is one, its replacement).

    Blocks (:class:`~shiftwise.models.deployed_blocks.DeployableBlock`) are replaced by their
    ``fuse(form)``, which also deploys their operator; operators outside a block
    (:class:`~shiftwise.layers.LargeKernelOperator`) by their ``inference_module(form)``.
    ``form`` is one of :data:`~shiftwise.layers.interface.DEPLOY_FORMS`, applied to every
    operator that has it; the others (and all with ``"auto"``) take their measured choice.
    The eval-mode output of the model is unchanged; a deployed model has nothing left to
    replace, so calling it twice is harmless.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    check_deploy_form(form, DEPLOY_FORMS)
    return _deployed(model, form)


def _deployed(module: nn.Module, form: str) -> nn.Module:
    if isinstance(module, DeployableBlock):
        return module.fuse(form).train(module.training)
    if isinstance(module, LargeKernelOperator):
        return module.preferred_inference_module(form).train(module.training)
    for name, child in module.named_children():
        setattr(module, name, _deployed(child, form))
    return module
