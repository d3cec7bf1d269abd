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
from shiftwise.models.registry import MODEL_CONFIGS, create_model, list_models
from shiftwise.models.reparam import reparameterize

__all__ = [
    "ARCHITECTURE_KWARGS",
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


# The create_model arguments a weights file may record (architecture only: nothing that names
# a file to load or changes what create_model returns), with their JSON kinds.
ARCHITECTURE_KWARGS: dict[str, str] = {
    "num_classes": "int",
    "in_chans": "int",
    "width_factor": "float",
    "depths": "ints",
    "dims": "ints",
    "kernel_sizes": "ints",
    "block": "str",
    "operator": "str",
    "operator_kwargs": "dict",
    "global_pool": "str",
    "drop_rate": "float",
    "drop_path_rate": "float",
    "layer_scale_init": "float",
    "head_init_scale": "float",
}
# Tensors above this many elements are created on the meta device while the architecture a
# file describes is checked against it (smaller ones, e.g. shift tables, stay real).
_META_ELEMENTS = 1 << 20


def _bad(path: Path, flag: str, what: str) -> CheckpointError:
    return CheckpointError(f"{flag}: the metadata of {str(path)!r} is invalid: {what}")


def _check_value(key: str, kind: str, value: Any, path: Path, flag: str) -> Any:
    """``value`` of metadata argument ``key`` if it is of ``kind`` (finite, in range)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "int" and not (isinstance(value, int) and number and value >= 0):
        raise _bad(path, flag, f"{key} must be an integer >= 0, got {value!r}")
    if kind == "float" and not (number and math.isfinite(value) and value >= 0):
        raise _bad(path, flag, f"{key} must be a finite number >= 0, got {value!r}")
    if kind == "ints" and not (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise _bad(path, flag, f"{key} must be a list of 4 integers >= 1, got {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise _bad(path, flag, f"{key} must be a string, got {value!r}")
    if kind == "dict" and not (
        isinstance(value, dict) and all(_is_plain(v) for v in value.values())
    ):
        raise _bad(path, flag, f"{key} must map names to finite plain values, got {value!r}")
    return value


def _is_plain(value: Any) -> bool:
    """A string, finite number, bool, ``None`` or a list of those (JSON without objects)."""
    if isinstance(value, list):
        return all(_is_plain(item) for item in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool | type(None))


def architecture_kwargs(metadata: Mapping[str, str], path: Path, flag: str) -> dict[str, Any]:
    """The :func:`create_model` arguments recorded in ``metadata``, each parsed and checked
    like a command-line value (:data:`ARCHITECTURE_KWARGS`); raises one
    :class:`CheckpointError` naming the bad entry."""
    text = metadata.get("model_kwargs") or "{}"
    try:
        kwargs = json.loads(text, parse_constant=lambda name: math.nan)
    except ValueError:
        raise _bad(path, flag, f"model_kwargs is not JSON ({text[:40]!r})") from None
    if not isinstance(kwargs, dict):
        raise _bad(path, flag, f"model_kwargs must be a JSON object, got {text[:40]!r}")
    for key in ("num_classes", "in_chans", "width_factor"):
        if metadata.get(key):
            kind = int if ARCHITECTURE_KWARGS[key] == "int" else float
            try:
                kwargs[key] = kind(metadata[key])
            except ValueError:
                raise _bad(path, flag, f"{key} must be a number, got {metadata[key]!r}") from None
    for key, value in kwargs.items():
        if key not in ARCHITECTURE_KWARGS:
            raise _bad(path, flag, f"{key!r} is not an architecture argument of create_model")
        _check_value(key, ARCHITECTURE_KWARGS[key], value, path, flag)
    return kwargs


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
    kwargs: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    path,
    flag: str,
    exact: bool = True,
) -> None:
    """Check the file's tensors against model ``name`` built with ``kwargs`` before anything
    large is allocated: a lower bound of the model's parameters (every block's MLP holds at
    least ``dim**2`` weights) against the file's, then the exact keys, shapes and dtypes of
    the model built with its large tensors on the meta device."""
    config = MODEL_CONFIGS[name]
    factor = kwargs.get("width_factor") or config.width_factor
    dims = [int(d * factor) for d in kwargs.get("dims") or config.dims]
    depths = kwargs.get("depths") or config.depths
    at_least = sum(depth * dim * dim for depth, dim in zip(depths, dims, strict=True))
    held = sum(tensor.numel() for tensor in tensors.values())
    if at_least > held:
        raise CheckpointError(
            f"{flag}: {str(path)!r} does not fit the model its metadata describes ({name!r} "
            f"with stage widths {dims} has more than {at_least} parameters, the file holds "
            f"{held} values)"
        )
    if not exact:
        return
    try:
        with _LargeTensorsOnMeta(_META_ELEMENTS):
            skeleton = create_model(name, **kwargs)
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
        raise CheckpointError(f"{flag}: {str(path)!r} was trained as {recorded!r}, not {name!r}")
    name = name or recorded
    if name is None:
        raise UsageError(f"{flag}: {str(path)!r} does not record its model; name the model")
    if name not in list_models():
        raise UsageError(f"{flag}: unknown model {name!r}, expected one of {list_models()}")
    kwargs: dict[str, Any] = dict(defaults or {})
    kwargs.update(architecture_kwargs(metadata, path, flag))
    kwargs.update({key: value for key, value in overrides.items() if value is not None})
    deployed = metadata.get("form") == "deployed"
    _check_architecture(name, kwargs, tensors, path, flag, exact=not deployed)
    model = create_model(name, **kwargs)
    if deployed:  # the file holds the re-parameterised form: check it after reparameterize
        model = reparameterize(model.eval())
        check_state_dict(model, tensors, source=f"{flag} {str(path)!r}")
    model.load_state_dict(tensors, strict=True)
    return model, metadata
