"""Models from weights files: save a built model with what rebuilds it, rebuild it from the file.

The file format itself (safetensors + metadata, digests, atomic writes) is
:mod:`shiftwise.io`; this module adds what needs the model registry: the architecture
arguments a built :class:`~shiftwise.models.network.MacroNet` records, and
:func:`model_from_weights`, which builds the recorded model and loads it strictly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shiftwise.errors import CheckpointError, UsageError
from shiftwise.io import check_state_dict, read_weights, save_weights
from shiftwise.models.registry import MODEL_CONFIGS, create_model, list_models

__all__ = ["model_from_weights", "save_checkpoint"]


def save_checkpoint(
    state_dict: Mapping[str, torch.Tensor] | nn.Module,
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model's weights (a module or its ``state_dict``) in the shiftwise format.

    ``metadata`` may name the ``model`` and its ``num_classes`` / ``in_chans`` /
    ``width_factor`` (for a module they are read from it); they are recorded so the file
    rebuilds its model. Returns ``path``.
    """
    meta = dict(metadata or {})
    kwargs = {k: meta.pop(k) for k in ("num_classes", "in_chans", "width_factor") if k in meta}
    kwargs.update(json.loads(meta.pop("model_kwargs", "{}")))
    name = meta.pop("model", None)
    if isinstance(state_dict, nn.Module):
        module = state_dict
        name = name or (getattr(module, "pretrained_cfg", None) or {}).get("architecture")
        kwargs = {**_module_kwargs(module, name), **kwargs}
        state_dict = module.state_dict()
    save_weights(state_dict, path, model=name, model_kwargs=kwargs, metadata=meta)
    return Path(path)


def _module_kwargs(module: nn.Module, name: str | None) -> dict[str, Any]:
    """Classes, input channels and width factor of a built :class:`MacroNet`."""
    kwargs: dict[str, Any] = {}
    if hasattr(module, "num_classes"):
        kwargs["num_classes"] = int(module.num_classes)
    stem = getattr(module, "stem", None)
    if stem is not None and hasattr(stem[0], "in_channels"):
        kwargs["in_chans"] = int(stem[0].in_channels)
    config = MODEL_CONFIGS.get(name) if name else None
    if config is not None and hasattr(module, "dims"):
        factor = round(module.dims[-1] / config.dims[-1], 6)
        if [int(d * factor) for d in config.dims] == list(module.dims):
            kwargs["width_factor"] = factor
    return kwargs


def model_from_weights(
    path: str | os.PathLike,
    name: str | None = None,
    weights: str = "model",
    flag: str = "--checkpoint",
    defaults: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> tuple[nn.Module, dict[str, str]]:
    """Build the model recorded in ``path`` and load its ``weights`` strictly.

    The architecture comes from the file's metadata; ``name`` (when given) must agree with
    it; ``defaults`` fill what the file does not record (files written by other tools) and
    non-``None`` ``overrides`` win over both. Returns ``(model, metadata)``; errors are one
    line naming ``flag``.
    """
    tensors, metadata = read_weights(path, weights, flag)
    recorded = metadata.get("model")
    if name is not None and recorded is not None and recorded != name:
        raise CheckpointError(f"--model: {str(path)!r} was trained as {recorded!r}, got {name!r}")
    name = name or recorded
    if name is None:
        raise UsageError(f"--model: {str(path)!r} does not record its model; name it with --model")
    if name not in list_models():
        raise UsageError(f"--model: unknown model {name!r}, expected one of {list_models()}")
    kwargs: dict[str, Any] = dict(defaults or {})
    kwargs.update(json.loads(metadata.get("model_kwargs") or "{}"))
    for key, kind in (("num_classes", int), ("in_chans", int), ("width_factor", float)):
        if metadata.get(key):
            kwargs[key] = kind(metadata[key])
    kwargs.update({key: value for key, value in overrides.items() if value is not None})
    model = create_model(name, **kwargs)
    check_state_dict(model, tensors, source=f"{flag} {str(path)!r}")
    model.load_state_dict(tensors, strict=True)
    return model, metadata
