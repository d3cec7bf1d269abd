"""Model weights as safetensors: atomic save and a strict, clearly-failing load."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["check_state_dict", "load_checkpoint", "save_checkpoint"]


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Raise ``ValueError`` listing missing / unexpected keys and shape mismatches, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: {tuple(state_dict[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    problems = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if items:
            shown = ", ".join(items[:8]) + (
                f", ... ({len(items) - 8} more)" if len(items) > 8 else ""
            )
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        architecture = getattr(model, "pretrained_cfg", {}).get(
            "architecture", type(model).__name__
        )
        raise ValueError(f"{source}: does not fit model {architecture!r} ({'; '.join(problems)})")


def save_checkpoint(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None
) -> Path:
    """Write ``state_dict`` as safetensors atomically (temporary file, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={k: str(v) for k, v in (metadata or {}).items()})
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors file."""
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load our safetensors weights into ``model`` strictly; returns ``model``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the missing /
    unexpected keys and shape mismatches (or the model the file was written for) otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint file at {str(path)!r}")
    architecture = getattr(model, "pretrained_cfg", {}).get("architecture")
    written_for = checkpoint_metadata(path).get("model")
    state_dict = load_file(str(path))
    try:
        check_state_dict(model, state_dict, source=f"path {str(path)!r}")
    except ValueError as error:
        if written_for and architecture and written_for != architecture:
            raise ValueError(
                f"path: {str(path)!r} holds weights for model {written_for!r}, not {architecture!r}"
            ) from error
        raise
    model.load_state_dict(state_dict, strict=True)
    return model
