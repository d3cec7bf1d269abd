"""Writing a run directory's resume points: the weights files first, the training state
(``checkpoint.pt``, the commit point) last, the state it replaces kept as
``checkpoint-previous.pt`` (a hard link, so there is no moment without a complete state file),
and only the weights files referenced by neither deleted (see :mod:`shiftwise.io` for the
formats)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from shiftwise.errors import DivergedError, WriteError
from shiftwise.io import (
    CHECKPOINT_WEIGHTS_PATTERN,
    PREVIOUS_NAME,
    STATE_FORMAT,
    STATE_NAME,
    atomic_link,
    non_finite,
    os_error_reason,
    referenced_weights_files,
    save_training_state,
    save_weights,
    weights_file,
)

__all__ = ["ResumePointWriter"]


class ResumePointWriter:
    """Writes the resume points of one run directory, keeping the previous one beside the
    latest.

    ``resumed`` is the state the run continued from (``None`` for a fresh run): when it is
    this directory's ``checkpoint.pt`` that file becomes ``checkpoint-previous.pt`` at the
    first save; a damaged ``checkpoint.pt`` is never promoted to previous.
    """

    def __init__(self, directory: str | os.PathLike, resumed: Mapping[str, Any] | None) -> None:
        self.directory = Path(directory)
        self.latest: set[str] | None = None  # weights files of a trusted checkpoint.pt
        self.previous: set[str] = set()
        if resumed is not None and Path(resumed["path"]).parent == self.directory:
            files = {entry["file"] for entry in resumed["weights"].values()}
            if Path(resumed["path"]).name == STATE_NAME:
                self.latest = files
                self.previous = referenced_weights_files(self.directory / PREVIOUS_NAME)
            else:
                self.previous = files

    def save(
        self,
        tensors: Mapping[str, Mapping[str, torch.Tensor]],
        state: Mapping[str, Any],
        *,
        model: str,
        model_kwargs: Mapping[str, Any],
        metadata: Mapping[str, Any],
    ) -> Path:
        """Write ``tensors`` (``{"model": state_dict, "ema": ...}``) and ``state`` (which
        must hold ``epoch`` and ``global_step``); returns the state file's path."""
        for kind, state_dict in tensors.items():
            bad = non_finite(state_dict)
            if bad:
                raise DivergedError(
                    f"training diverged: the {kind} weights hold NaN or infinity (e.g. {bad[0]}) "
                    f"at step {state['global_step']}; nothing was written; {self.safe_on_disk()}"
                )
        stem = f"weights-e{state['epoch']:04d}-s{state['global_step']:08d}"
        entries: dict[str, dict[str, str]] = {}
        latest = self.directory / STATE_NAME
        try:
            for kind, state_dict in tensors.items():
                file = weights_file(self.directory / f"{stem}.safetensors", kind)
                entries[kind] = {"file": file.name, "sha256": ""}
                entries[kind]["sha256"] = save_weights(
                    state_dict,
                    file,
                    model=model,
                    model_kwargs=model_kwargs,
                    weights=kind,
                    metadata=metadata,
                )
            if self.latest is not None and latest.is_file():
                atomic_link(latest, self.directory / PREVIOUS_NAME)
                self.previous = self.latest
            save_training_state(latest, {**state, "format": STATE_FORMAT, "weights": entries})
        except (WriteError, OSError) as error:
            keep = (self.latest or set()) | self.previous
            for entry in entries.values():  # this resume point's files, unless in use
                if entry["file"] not in keep:
                    (self.directory / entry["file"]).unlink(missing_ok=True)
            reason = str(error) if isinstance(error, WriteError) else os_error_reason(error)
            raise WriteError(f"resume point not saved: {reason}; {self.safe_on_disk()}") from None
        self.latest = {entry["file"] for entry in entries.values()}
        keep = self.latest | self.previous
        for file in self.directory.iterdir():
            if CHECKPOINT_WEIGHTS_PATTERN.fullmatch(file.name) and file.name not in keep:
                file.unlink(missing_ok=True)
        return latest

    def safe_on_disk(self) -> str:
        """What a failed or refused save leaves usable, in words (for error messages)."""
        if (self.directory / STATE_NAME).is_file():
            return f"the last resume point {str(self.directory / STATE_NAME)!r} is untouched"
        return f"no resume point of this run was written to {str(self.directory)!r} yet"
