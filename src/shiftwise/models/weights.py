"""Models from weights files: save a built model with what rebuilds it, rebuild it from the file.

The file format itself (safetensors + metadata, digests, atomic writes) is
:mod:`shiftwise.io`; this module adds what needs the model registry: the architecture
arguments a built :class:`~shiftwise.models.network.MacroNet` records, and
:func:`model_from_weights`, which builds the recorded model and loads it strictly.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from shiftwise.errors import CheckpointError, UsageError
from shiftwise.io import check_state_dict, read_weights, save_weights
from shiftwise.models.arguments import check_arguments, stage_widths
from shiftwise.models.network import MacroNet
from shiftwise.models.registry import (
    MODEL_CONFIGS,
    check_image_size,
    check_model_arguments,
    create_model,
    list_models,
)
from shiftwise.models.reparam import reparameterize

__all__ = [
    "architecture_kwargs",
    "model_from_weights",
    "recorded_int",
    "save_checkpoint",
]


def save_checkpoint(
    state_dict: Mapping[str, torch.Tensor] | nn.Module,
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model's weights (a module or its ``state_dict``) in the shiftwise format.

    ``metadata`` may name the ``model`` and its ``num_classes`` / ``in_chans`` /
    ``width_factor`` (for a module they are read from it); they are recorded so the file
    rebuilds its model. A re-parameterised module is recorded as ``form="deployed"``, which
    :func:`model_from_weights` re-parameterises before loading. Returns ``path``.
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
        if name in MODEL_CONFIGS and _is_deployed(name, kwargs, state_dict):
            meta["form"] = "deployed"
    save_weights(state_dict, path, model=name, model_kwargs=kwargs, metadata=meta)
    return Path(path)


def _is_deployed(name: str, kwargs: Mapping[str, Any], state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` has other keys than model ``name``'s training form."""
    with _LargeTensorsOnMeta(_META_ELEMENTS):
        training = create_model(name, **kwargs)
    return set(training.state_dict()) != set(state_dict)


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


# Tensors above this many elements are created on the meta device while the architecture a
# file describes is checked against it (smaller ones, e.g. shift tables, stay real).
_META_ELEMENTS = 1 << 20


def _bad(path: Path, flag: str, what: str) -> CheckpointError:
    return CheckpointError(f"the metadata of {str(path)!r} is invalid: {what}", field=flag)


def architecture_kwargs(metadata: Mapping[str, str], path: Path, flag: str) -> dict[str, Any]:
    """The :func:`create_model` arguments recorded in ``metadata`` (architecture only:
    :data:`~shiftwise.models.arguments.ARGUMENTS`), each checked like a command-line value
    (:func:`~shiftwise.models.arguments.check_arguments`); raises one :class:`CheckpointError`
    naming the bad entry."""
    text = metadata.get("model_kwargs") or "{}"
    try:
        kwargs = json.loads(text, parse_constant=lambda name: math.nan)
    except ValueError:
        raise _bad(path, flag, f"model_kwargs is not JSON ({text[:40]!r})") from None
    if not isinstance(kwargs, dict):
        raise _bad(path, flag, f"model_kwargs must be a JSON object, got {text[:40]!r}")
    for key, kind in (("num_classes", int), ("in_chans", int), ("width_factor", float)):
        if metadata.get(key):
            try:
                kwargs[key] = kind(metadata[key])
            except ValueError:
                raise _bad(path, flag, f"{key} must be a number, got {metadata[key]!r}") from None
    try:
        return check_arguments(kwargs)
    except UsageError as error:
        raise _bad(path, flag, str(error)) from None


def _integer(text: str) -> int | str:
    """``text`` as an integer, or unchanged when it is not one."""
    try:
        return int(text)
    except ValueError:
        return text


def recorded_int(
    metadata: Mapping[str, str], key: str, default: int, path: str | os.PathLike, flag: str
) -> int:
    """The integer >= 1 metadata entry ``key`` (``default`` when absent), or one
    :class:`CheckpointError` naming it."""
    text = metadata.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise _bad(Path(path), flag, f"{key} must be an integer >= 1, got {text!r}")
    return value


class _LargeTensorsOnMeta(TorchFunctionMode):
    """Creates every tensor of more than ``limit`` elements on the meta device (no memory)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None:
            shape = args[0] if args and isinstance(args[0], tuple | list | torch.Size) else args
            sizes = [s for s in shape if isinstance(s, int)]
            if sizes and math.prod(sizes) > self.limit:
                kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _check_architecture(
    name: str,
    arguments: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    path,
    flag: str,
    exact: bool = True,
) -> None:
    """Check the file's tensors against model ``name`` built with ``arguments`` (every
    :class:`MacroNet` argument) before anything large is allocated: a lower bound of the
    model's parameters (every block's MLP holds at least ``dim**2`` weights) against the
    file's, then the exact keys, shapes and dtypes of the model built with its large tensors
    on the meta device."""
    dims = stage_widths(arguments["dims"], arguments["width_factor"])
    depths = arguments["depths"]
    at_least = sum(depth * dim * dim for depth, dim in zip(depths, dims, strict=True))
    held = sum(tensor.numel() for tensor in tensors.values())
    if at_least > held:
        raise CheckpointError(
            f"{str(path)!r} does not fit the model its metadata describes ({name!r} "
            f"with stage widths {dims} has more than {at_least} parameters, the file holds "
            f"{held} values)",
            field=flag,
        )
    if not exact:
        return
    try:
        with _LargeTensorsOnMeta(_META_ELEMENTS):
            skeleton = MacroNet(**arguments)
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _bad(
            path, flag, f"it does not describe a model create_model builds ({reason})"
        ) from None
    check_state_dict(skeleton, tensors, source=f"{flag} {str(path)!r}")


def model_from_weights(
    path: str | os.PathLike,
    name: str | None = None,
    weights: str = "model",
    flag: str = "path",
    defaults: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> tuple[nn.Module, dict[str, str]]:
    """Build the model recorded in ``path`` and load its ``weights`` strictly.

    The architecture comes from the file's metadata, validated like user input
    (:func:`architecture_kwargs`) and checked against the file's tensors before the model is
    allocated; ``name`` (when given) must agree with it; ``defaults`` fill what the file does
    not record (files written by other tools) and non-``None`` ``overrides`` win over both.
    Returns ``(model, metadata)``; errors are one line naming ``flag`` (the argument name by
    default; the command line passes its option).
    """
    path = Path(path)
    tensors, metadata = read_weights(path, weights, flag)
    recorded = metadata.get("model")
    if name is not None and recorded is not None and recorded != name:
        raise CheckpointError(
            f"{str(path)!r} was trained as {recorded!r}, not {name!r}", field=flag
        )
    name = name or recorded
    if name is None:
        raise UsageError(f"{str(path)!r} does not record its model; name the model", field=flag)
    if name not in list_models():
        raise UsageError(f"unknown model {name!r}, expected one of {list_models()}", field=flag)
    kwargs: dict[str, Any] = dict(defaults or {})
    kwargs.update(architecture_kwargs(metadata, path, flag))
    kwargs.update({key: value for key, value in overrides.items() if value is not None})
    try:
        arguments = check_model_arguments(name, **kwargs)
        if metadata.get("image_size"):
            check_image_size(name, _integer(metadata["image_size"]), "image_size")
    except UsageError as error:
        raise _bad(path, flag, str(error)) from None
    deployed = metadata.get("form") == "deployed"
    _check_architecture(name, arguments, tensors, path, flag, exact=not deployed)
    model = create_model(name, **kwargs)
    if deployed:  # the file holds the re-parameterised form: check it after reparameterize
        model = reparameterize(model.eval())
        check_state_dict(model, tensors, source=f"{flag} {str(path)!r}")
    model.load_state_dict(tensors, strict=True)
    return model, metadata
