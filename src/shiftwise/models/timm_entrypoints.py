"""Registration of our models in timm's registry, done only when ``import timm`` works.

timm is never required (it cannot even be imported next to a CPU-only torch without
torchvision). When it imports, every name of :func:`shiftwise.list_models` that timm does not
already define is registered together with its default pretrained cfg (timm's
``generate_default_cfgs`` way, from :func:`shiftwise.models.registry.pretrained_cfg`), so
``timm.create_model("sw_tiny", ...)``, ``timm.list_models("sw_*")`` and
``timm.models.get_pretrained_cfg("sw_tiny")`` work. timm has its own ``convnext_atto`` and
``convnext_tiny``: those names keep building timm's models (ours stay reachable through
``shiftwise.create_model``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from shiftwise.models.registry import create_model, list_models, pretrained_cfg

__all__ = ["default_cfgs", "register_timm"]  # timm's register_model appends the model names

logger = logging.getLogger(__name__)

# timm's ``register_model`` reads the default cfgs from the entry point's module, under this
# name; filled by :func:`register_timm` (``DefaultCfg`` objects need timm).
default_cfgs: dict[str, Any] = {}


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    def build(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_model(name, pretrained=pretrained, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__module__ = __name__
    build.__doc__ = f"shiftwise model {name!r} (see shiftwise.models.registry)."
    return build


def register_timm() -> list[str]:
    """Register our entry points and default cfgs in timm if it imports; returns the names."""
    try:
        from timm.models import generate_default_cfgs, is_model, model_entrypoint, register_model
    except Exception as error:  # timm absent, or broken by a torchvision mismatch
        logger.debug("timm not importable (%s): models not registered in timm", error)
        return []
    names = []
    for name in list_models():
        if is_model(name):
            if getattr(model_entrypoint(name), "__module__", None) != __name__:
                logger.debug("timm already defines %s: not overriding it", name)
            continue
        names.append(name)
    default_cfgs.update(generate_default_cfgs({name: pretrained_cfg(name) for name in names}))
    for name in names:
        entrypoint = globals()[name] = _entrypoint(name)  # a module attribute, as in timm
        register_model(entrypoint)
    return names
