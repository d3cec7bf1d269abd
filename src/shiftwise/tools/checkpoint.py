"""Atomic training checkpoints: weights in safetensors, everything else in a small state file.

A checkpoint in a run directory is two files:

* ``weights-eEEE-sSSSSSSS.safetensors``: ``model.*`` and (when used) ``ema.*`` tensors, with
  the model name, class count and input channels in its metadata;
* ``checkpoint.pt``: ``torch.save`` of the optimizer, scheduler, masking and RNG states,
  epoch/step counters, the run's arguments, and the name of its weights file.

Both are written to a temporary file in the same directory and moved into place with
``os.replace``; the weights file comes first and the state file (the commit point) last, and
only then is the previous weights file deleted. A crash at any moment therefore leaves the
previous complete checkpoint, never a half-written one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

__all__ = [
    "STATE_NAME",
    "Checkpoint",
    "capture_rng",
    "load_checkpoint",
    "load_weights",
    "restore_rng",
    "save_checkpoint",
    "save_weights",
]

STATE_NAME = "checkpoint.pt"
FORMAT = "shiftwise-checkpoint-1"


def _atomic_write(path: Path, write) -> None:
    """Call ``write(temporary_path)`` then move the result onto ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_weights(
    path: Path, tensors: dict[str, dict[str, torch.Tensor]], metadata: dict[str, Any]
) -> None:
    """Write ``{"model": state_dict, "ema": state_dict, ...}`` as one safetensors file
    (keys ``"model.<name>"``) atomically; ``metadata`` values are stored as strings."""
    flat = {
        f"{prefix}.{name}": tensor.detach().cpu().contiguous().clone()
        for prefix, state in tensors.items()
        for name, tensor in state.items()
    }
    meta = {"format": FORMAT, **{key: str(value) for key, value in metadata.items()}}
    _atomic_write(path, lambda tmp: save_file(flat, str(tmp), metadata=meta))


def load_weights(path: str | os.PathLike) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Read :func:`save_weights` output: ``({"model": state_dict, ...}, metadata)``.

    Also accepts a ``checkpoint.pt`` state file (its weights file is read) and a plain
    safetensors state dict without prefixes (returned as ``{"model": ...}``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint: no such file {str(path)!r}")
    if path.suffix != ".safetensors":
        state = load_checkpoint(path)
        path = path.with_name(state["weights"])
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        flat = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"--checkpoint: {str(path)!r} is not a readable safetensors file ({error})"
        ) from None
    if metadata.get("format") != FORMAT:
        return {"model": flat}, metadata
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        prefix, name = key.split(".", 1)
        tensors.setdefault(prefix, {})[name] = tensor
    return tensors, metadata


def model_from_weights(
    name: str,
    path: str | os.PathLike,
    weights: str = "model",
    defaults: dict[str, Any] | None = None,
    **overrides: Any,
) -> tuple[torch.nn.Module, dict]:
    """Build model ``name`` and load the ``weights`` entry of ``path`` into it, strictly.

    ``path`` is what :func:`load_weights` reads. The model gets the classes, input channels
    and width recorded by ``shiftwise train`` when present, else ``defaults``; ``overrides``
    that are not ``None`` win over both. Returns ``(model, metadata)``; a file for another
    model, a missing entry or mismatched weights raise a one-line ``ValueError``.
    """
    from shiftwise.models import create_model

    tensors, metadata = load_weights(path)
    if weights not in tensors:
        raise ValueError(
            f"--weights: {str(path)!r} holds {sorted(tensors)} weights, not {weights!r}"
        )
    if metadata.get("model", name) != name:
        raise ValueError(
            f"--model: the checkpoint was trained as {metadata['model']!r}, got {name!r}"
        )
    kwargs: dict[str, Any] = dict(defaults or {})
    if "num_classes" in metadata:
        kwargs["num_classes"] = int(metadata["num_classes"])
    if "in_chans" in metadata:
        kwargs["in_chans"] = int(metadata["in_chans"])
    if metadata.get("width_factor"):
        kwargs["width_factor"] = float(metadata["width_factor"])
    kwargs.update({key: value for key, value in overrides.items() if value is not None})
    model = create_model(name, **kwargs)
    try:
        model.load_state_dict(tensors[weights])
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), "")
        raise ValueError(
            f"--checkpoint: weights do not fit {name!r}: {first or str(error)}"[:400]
        ) from None
    return model, metadata


Checkpoint = dict[str, Any]


def save_checkpoint(
    directory: Path,
    tensors: dict[str, dict[str, torch.Tensor]],
    metadata: dict[str, Any],
    state: Checkpoint,
) -> Path:
    """Write a checkpoint (weights, then ``checkpoint.pt``) into ``directory``; returns the
    state file's path. ``state`` must hold ``epoch`` and ``global_step``."""
    directory.mkdir(parents=True, exist_ok=True)
    state_path = directory / STATE_NAME
    previous = None
    if state_path.is_file():
        try:
            previous = load_checkpoint(state_path)["weights"]
        except ValueError:
            previous = None
    weights_name = f"weights-e{state['epoch']:04d}-s{state['global_step']:08d}.safetensors"
    save_weights(directory / weights_name, tensors, metadata)
    full_state = {"format": FORMAT, **state, "weights": weights_name, "metadata": metadata}
    _atomic_write(state_path, lambda tmp: torch.save(full_state, tmp))
    if previous and previous != weights_name:
        (directory / previous).unlink(missing_ok=True)
    return state_path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The state dict of a ``checkpoint.pt`` (or of the run directory holding one).

    Raises FileNotFoundError when absent and ValueError when it is not a complete
    shiftwise checkpoint (corrupt file, or its weights file missing).
    """
    path = Path(path)
    if path.is_dir():
        path = path / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types on a damaged file
        raise ValueError(
            f"--resume: {str(path)!r} is not a readable checkpoint "
            f"({type(error).__name__}: {str(error).splitlines()[0][:120]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"--resume: {str(path)!r} is not a shiftwise training checkpoint")
    if not (path.parent / state["weights"]).is_file():
        raise ValueError(
            f"--resume: the weights file {state['weights']!r} of {str(path)!r} is missing"
        )
    state["path"] = str(path)
    return state


def capture_rng() -> dict[str, Any]:
    """States of python's, NumPy's and torch's global generators (CPU and CUDA)."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            *numpy_state[2:],
        ),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
