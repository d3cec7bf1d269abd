"""Registration of our models in timm's registry, done only when ``import timm`` works.

timm is never required (it cannot even be imported next to a CPU-only torch without
torchvision). When it imports, every name of :func:`shiftwise.list_models` that timm does not
already define (timm has its own ``convnext_atto`` / ``convnext_tiny``) is registered, so
``timm.create_model("sw_tiny", ...)`` builds our model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from shiftwise.models.registry import create_model, list_models

logger = logging.getLogger(__name__)


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    def build(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_model(name, pretrained=pretrained, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__module__ = __name__
    build.__doc__ = f"shiftwise model {name!r} (see shiftwise.models.registry)."
    return build


def register_timm() -> list[str]:
    """Register our entry points in timm if it imports; returns the names registered."""
    try:
        from timm.models import is_model, register_model
    except Exception as error:  # timm absent, or broken by a torchvision mismatch
        logger.debug("timm not importable (%s): models not registered in timm", error)
        return []
    registered = []
    for name in list_models():
        if is_model(name):
            if getattr(_entrypoint_of(name), "__module__", None) != __name__:
                logger.debug("timm already defines %s: not overriding it", name)
            continue
        register_model(_entrypoint(name))
        registered.append(name)
    return registered


def _entrypoint_of(name: str) -> Callable[..., Any] | None:
    from timm.models import model_entrypoint

    return model_entrypoint(name)
