"""Everything shiftwise writes to or reads from disk: weights, training state, atomic writes.

**Weights** (``shiftwise train``'s ``model.safetensors`` / ``model-ema.safetensors``, the
``weights-*.safetensors`` of a checkpoint, ``shiftwise convert``'s output,
:func:`save_weights`) are one safetensors file per model: the plain ``state_dict`` (no
prefix). Its metadata records what rebuilds the model from the file alone:

* ``format``: ``"shiftwise-weights-2"``; ``weights``: ``"model"`` or ``"ema"``;
* ``model``: the registered name; ``model_kwargs``: JSON of the :func:`create_model`
  arguments that differ from the registered configuration (classes, input channels, width,
  operator options); ``num_classes``, ``in_chans``, ``width_factor`` also on their own;
* ``shiftwise_version``; ``sha256``: :func:`weights_digest` of the tensors *and* of every
  other metadata entry, verified on every load;
* anything the writer adds (``image_size``, ``data``, ``epoch``, ``converted_from``...).

Files of the previous format ``shiftwise-weights-2`` (whose ``sha256`` covers the tensors only)
still load, with a warning that their metadata is not covered; the metadata of every file is
validated like user input before it is used (:mod:`shiftwise.models.weights`). Verification
cannot be switched off by the file: a current-format file without its ``sha256`` is refused,
and so is a file whose ``format`` is none shiftwise wrote; only the older formats may lack
the digest, and load with a warning that they are unverified.

The EMA weights of ``X.safetensors`` are ``X-ema.safetensors`` (:func:`weights_file`).

**Training state** (``checkpoint.pt``) is ``torch.save`` of ``{"format", "sha256",
"payload"}``: ``payload`` is the serialized state (optimizer, scheduler, masks, RNG states,
counters, the run's configuration, and the names and digests of its weights files) as a uint8
tensor and ``sha256`` its digest, so a damaged file is detected before use. A checkpoint
writes its weights files first and the state file (the commit point) last; the state it
replaces is kept as ``checkpoint-previous.pt`` (a hard link, so there is no moment without a
complete ``checkpoint.pt``), and only weights files referenced by neither are deleted.

**Safety.** Files are written to a temporary file in the same directory (created with the
process umask), flushed, ``fsync``-ed and moved into place with ``os.replace``; a write that
fails (disk full, ...) raises :class:`~shiftwise.errors.WriteError` naming the file, with
nothing partial left (a run directory's leftovers of interrupted writes are removed by
:mod:`shiftwise.training.run_directory`). Only regular files are read
(:func:`read_regular_file`): a FIFO, device or socket is refused before it is opened. Every
``torch.load`` is ``weights_only=True`` with an explicit allow-list of harmless globals
(:data:`SAFE_GLOBALS`); a pickle that needs anything else is refused with
:class:`~shiftwise.errors.UnsafeFileError` naming the global. Non-finite weights are never
written (:class:`~shiftwise.errors.DivergedError`), nor loaded (:func:`read_weights`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pickle
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from shiftwise.errors import (
    CheckpointError,
    DivergedError,
    MissingFileError,
    UnsafeFileError,
    UsageError,
    WriteError,
)
from shiftwise.version import __version__

__all__ = [
    "PREVIOUS_NAME",
    "SAFE_GLOBALS",
    "STATE_NAME",
    "WEIGHTS_FORMAT",
    "atomic_link",
    "atomic_write",
    "check_output_not_input",
    "check_regular_file",
    "check_state_dict",
    "find_resumable",
    "load_checkpoint",
    "load_training_state",
    "os_error_reason",
    "read_regular_file",
    "read_weights",
    "referenced_weights_files",
    "safe_torch_load",
    "save_training_state",
    "save_weights",
    "tensor_digest",
    "weights_digest",
    "weights_file",
]

logger = logging.getLogger(__name__)

WEIGHTS_FORMAT = "shiftwise-weights-3"
TENSOR_DIGEST_FORMAT = "shiftwise-weights-2"  # its sha256 covers the tensors only
LEGACY_WEIGHTS_FORMAT = "shiftwise-checkpoint-1"  # "model."/"ema."-prefixed keys, one file
STATE_FORMAT = "shiftwise-state-2"
STATE_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint-previous.pt"
TEMP_SUFFIX = ".tmp"


def _numpy_scalar_globals() -> list[Any]:
    """numpy's scalar reconstructor and dtype classes (pickled numbers in official files)."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(kind)) for kind in ("float64", "float32", "int64", "int32", "bool")]
    return [core.multiarray.scalar, np.dtype, *dtypes]


# Globals an official (or our) checkpoint may carry besides tensors; all are plain data.
SAFE_GLOBALS: tuple[Any, ...] = (argparse.Namespace, *_numpy_scalar_globals())


# ---------------------------------------------------------------------------------------------
# Reading only regular files

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _refuse_irregular(mode: int, path: Path, option: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    raise UsageError(f"{option}: {str(path)!r} is {kind}, expected a regular file")


def check_regular_file(path: str | os.PathLike, option: str = "path") -> Path:
    """``path`` if it is a regular file (links followed); raises :class:`MissingFileError`
    when it does not exist and a one-line :class:`UsageError` naming ``option`` when it is a
    FIFO, device, socket or directory (opening those could block or have side effects)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MissingFileError(f"{option}: no such file {str(path)!r}") from None
    except OSError as error:
        raise UsageError(
            f"{option}: cannot read {str(path)!r} ({os_error_reason(error)})"
        ) from None
    _refuse_irregular(mode, path, option)
    return path


def read_regular_file(path: str | os.PathLike, option: str = "path") -> bytes:
    """The bytes of the regular file ``path``; anything else is refused before it is opened
    (see :func:`check_regular_file`), and the opened file is checked again (``O_NONBLOCK``, so
    a FIFO swapped in after the check cannot block)."""
    path = check_regular_file(path, option)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise UsageError(
            f"{option}: cannot read {str(path)!r} ({os_error_reason(error)})"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        _refuse_irregular(os.fstat(fd).st_mode, path, option)
        try:
            return handle.read()
        except OSError as error:
            raise UsageError(
                f"{option}: cannot read {str(path)!r} ({os_error_reason(error)})"
            ) from None


def os_error_reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def check_output_not_input(
    output: str | os.PathLike, inputs: Iterable[str | os.PathLike], field: str = "output"
) -> None:
    """Raise a one-line :class:`UsageError` naming ``field`` when ``output`` is one of
    ``inputs``: the same file by ``os.path.samefile`` (so also through a symbolic or hard
    link). Writing the output would replace the input. Inputs or an output that do not exist
    (yet) are never the same file."""
    for source in inputs:
        try:
            same = os.path.samefile(output, source)
        except OSError:  # either does not exist (or cannot be examined): nothing to replace
            continue
        if same:
            raise UsageError(
                f"{field}: {str(output)!r} is the input {str(source)!r}; writing it would "
                "replace the input (choose another output path)"
            )


# ---------------------------------------------------------------------------------------------
# Atomic writes


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None]) -> Path:
    """Write ``data`` (bytes, or a function writing to a binary handle) to ``path`` atomically.

    The temporary file lives in the same directory, is created with mode ``0o666`` minus the
    process umask, and is ``fsync``-ed before ``os.replace``; the directory is synced after.
    On any error the temporary file is removed and ``path`` is unchanged; an ``OSError``
    (disk full, read-only file system, ...) becomes one :class:`WriteError` naming ``path``.
    Returns ``path``.
    """
    path = Path(path)
    tmp = _temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                if callable(data):
                    data(handle)
                else:
                    handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as error:
        before = "its previous version is unchanged" if path.exists() else "no file was left"
        failure = WriteError(f"cannot write {str(path)!r} ({os_error_reason(error)}); {before}")
        failure.errno = error.errno  # the cause (ENOSPC, EACCES, ...), kept out of the message
        raise failure from None
    _fsync_directory(path.parent)
    return path


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported (e.g. some network file systems)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_link(source: Path, path: Path) -> None:
    """Make ``path`` a hard link to ``source`` (a copy where links fail), atomically."""
    if path.exists() and os.path.samefile(source, path):
        return  # already (a run killed between this link and the next state write)
    tmp = _temp_path(path)
    try:
        os.link(source, tmp)
    except OSError:
        atomic_write(path, source.read_bytes())
        return
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Safe torch.load


def safe_torch_load(source: str | os.PathLike | BytesIO, flag: str = "path") -> Any:
    """``torch.load(source, weights_only=True)`` with :data:`SAFE_GLOBALS` allowed.

    Raises :class:`UnsafeFileError` naming the refused global when the pickle needs another
    one (nothing of it is executed) and :class:`CheckpointError` when the file is damaged.
    """
    name = repr(str(source)) if not isinstance(source, BytesIO) else "the checkpoint payload"
    if not isinstance(source, BytesIO):
        source = BytesIO(read_regular_file(source, flag))
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        match = re.search(r"GLOBAL ([\w.]+)", str(error))
        if match:
            refused = match[1]
            raise UnsafeFileError(
                f"{flag}: {name} refers to {refused}, which is not an allowed global; "
                "refusing to load it (unpickling it could run code)"
            ) from None
        raise CheckpointError(
            f"{flag}: {name} is not a readable checkpoint (damaged or not a torch file: "
            f"{_unpickler_reason(error)})"
        ) from None
    except Exception as error:  # torch.load raises many types on a damaged file
        raise CheckpointError(
            f"{flag}: {name} is not a readable checkpoint ({_first_line(error)})"
        ) from None


def _unpickler_reason(error: BaseException) -> str:
    """The line of torch's weights-only unpickler message that says what went wrong."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(boilerplate)]
    return reasons[0] if reasons else type(error).__name__


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


# ---------------------------------------------------------------------------------------------
# Weights files


def _hash_tensors(digest: Any, state_dict: Mapping[str, torch.Tensor]) -> None:
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():  # an empty tensor has no bytes (and may have any strides)
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def tensor_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors (name, dtype, shape and bytes, in sorted name order): the
    ``sha256`` of files of the previous format ``shiftwise-weights-2``."""
    digest = hashlib.sha256()
    _hash_tensors(digest, state_dict)
    return digest.hexdigest()


def weights_digest(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 of the tensors (as :func:`tensor_digest`) followed by every metadata entry but
    ``sha256`` itself (JSON, sorted keys): a changed byte anywhere in the file changes it."""
    digest = hashlib.sha256()
    _hash_tensors(digest, state_dict)
    covered = {key: value for key, value in metadata.items() if key != "sha256"}
    digest.update(json.dumps(covered, sort_keys=True).encode())
    return digest.hexdigest()


def non_finite(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity."""
    return [
        key
        for key, tensor in state_dict.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def weights_file(path: str | os.PathLike, weights: str = "model") -> Path:
    """The file of the ``weights`` ("model" / "ema") entry belonging to ``path``."""
    path = Path(path)
    if weights == "model":
        return path
    return path.with_name(f"{path.stem}-{weights}{path.suffix}")


def save_weights(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    model: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    weights: str = "model",
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Write ``state_dict`` to ``path`` as safetensors (format in the module docstring).

    ``model`` and ``model_kwargs`` (the :func:`create_model` arguments that differ from the
    registered configuration) let :func:`model_from_weights` rebuild the model; ``metadata``
    values are stored as strings. Raises :class:`DivergedError` (writing nothing) when a
    floating-point tensor is not finite. Returns the file's :func:`weights_digest`.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    bad = non_finite(tensors)
    if bad:
        raise DivergedError(
            f"refusing to write {str(path)!r}: {len(bad)} tensors hold NaN or infinity "
            f"(e.g. {bad[0]}); the previous files are untouched"
        )
    kwargs = dict(model_kwargs or {})
    meta = {key: str(value) for key, value in (metadata or {}).items()}
    meta.update(
        format=WEIGHTS_FORMAT,
        weights=weights,
        model_kwargs=json.dumps(kwargs, sort_keys=True),
        shiftwise_version=__version__,
    )
    if model is not None:
        meta["model"] = model
    for key in ("num_classes", "in_chans", "width_factor"):
        if key in kwargs:
            meta[key] = str(kwargs[key])
    digest = meta["sha256"] = weights_digest(tensors, meta)
    atomic_write(path, save_safetensors(tensors, metadata=meta))
    return digest


def read_weights(
    path: str | os.PathLike,
    weights: str = "model",
    flag: str = "path",
    weights_flag: str = "weights",
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state_dict and metadata of the ``weights`` entry of ``path``.

    ``path`` is a weights file (its ``-ema`` sibling for ``weights="ema"``), a
    ``checkpoint.pt`` or a run directory (the checkpoint's weights files); files of the
    previous formats (``model.``/``ema.`` prefixes; a digest of the tensors only) still load.
    The recorded digest is verified and weights holding NaN or infinity are refused. Errors
    name ``flag`` (``weights_flag`` for a missing
    entry): :class:`MissingFileError`, or :class:`CheckpointError` for a damaged file or a
    missing entry; anything but a regular file or directory is refused unopened.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{flag}: no such file {str(path)!r}")
    if path.is_dir() or path.suffix == ".pt":
        state = find_resumable(path, flag)
        if weights not in state["tensors"]:
            raise CheckpointError(
                f"{weights_flag}: {str(path)!r} holds {sorted(state['tensors'])} weights, "
                f"not {weights!r}"
            )
        return state["tensors"][weights], state["weights_metadata"][weights]
    data = read_regular_file(path, flag)
    metadata = _metadata(data, path, flag)
    _check_format(metadata, path, flag)
    if metadata.get("format") == LEGACY_WEIGHTS_FORMAT:
        _warn_unverified(path, flag)
        flat = _read_tensors(data, path, flag)
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in flat.items():
            prefix, _, name = key.partition(".")
            grouped.setdefault(prefix, {})[name] = tensor
        if weights not in grouped:
            raise CheckpointError(
                f"{weights_flag}: {str(path)!r} holds {sorted(grouped)} weights, not {weights!r}"
            )
        _refuse_non_finite(grouped[weights], path, flag)
        return grouped[weights], metadata
    if metadata.get("weights", "model") != weights:
        target = weights_file(path, weights)
        if not target.is_file():
            raise CheckpointError(
                f"{weights_flag}: {str(path)!r} holds ['{metadata.get('weights', 'model')}'] "
                f"weights, not {weights!r} (no {target.name!r} beside it)"
            )
        path = target
        data = read_regular_file(path, flag)
        metadata = _metadata(data, path, flag)
        _check_format(metadata, path, flag)
    tensors = _read_tensors(data, path, flag)
    _verify_digest(tensors, metadata, path, flag)
    _refuse_non_finite(tensors, path, flag)
    return tensors, metadata


def _refuse_non_finite(tensors: Mapping[str, torch.Tensor], path: Path, flag: str) -> None:
    """Weights holding NaN or infinity are refused on load as they are on save: a model
    built from them evaluates to ``nan`` (shiftwise never writes such a file)."""
    bad = non_finite(tensors)
    if bad:
        raise CheckpointError(
            f"{flag}: {str(path)!r} holds NaN or infinity in {len(bad)} tensors (e.g. "
            f"{bad[0]}); refusing weights that cannot compute anything"
        )


def _verify_digest(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], path: Path, flag: str
) -> None:
    """Check the recorded ``sha256`` (over tensors and metadata; tensors only in the previous
    format, with a warning that its metadata is not covered). A file of the current format
    without it is refused (removing the key must not switch verification off); one of the
    previous format loads unverified, with a warning."""
    recorded = metadata.get("sha256")
    if recorded is None:
        if metadata["format"] == WEIGHTS_FORMAT:
            raise CheckpointError(
                f"{flag}: {str(path)!r} has no sha256 in its metadata, which every "
                f"{WEIGHTS_FORMAT} file carries; refusing an unverifiable file"
            )
        _warn_unverified(path, flag)
        return
    if metadata["format"] == TENSOR_DIGEST_FORMAT:
        logger.warning(
            "%s: %r was written by an earlier shiftwise: its digest does not cover its "
            "metadata (saving it again upgrades it)",
            flag,
            str(path),
        )
        actual = tensor_digest(tensors)
    else:
        actual = weights_digest(tensors, metadata)
    if actual != recorded:
        raise CheckpointError(
            f"{flag}: {str(path)!r} is damaged (its tensors and metadata do not match the "
            "recorded sha256)"
        )


def _check_format(metadata: Mapping[str, str], path: Path, flag: str) -> None:
    """Refuse a file whose ``format`` is none shiftwise writes or wrote."""
    formats = (WEIGHTS_FORMAT, TENSOR_DIGEST_FORMAT, LEGACY_WEIGHTS_FORMAT)
    if metadata.get("format") not in formats:
        found = repr(metadata["format"]) if "format" in metadata else "no format"
        raise CheckpointError(
            f"{flag}: {str(path)!r} is not a shiftwise weights file ({found} in its metadata, "
            f"expected one of {', '.join(formats)})"
        )


def _warn_unverified(path: Path, flag: str) -> None:
    logger.warning(
        "%s: %r was written by an earlier shiftwise without a digest: it cannot be verified "
        "(saving it again adds one)",
        flag,
        str(path),
    )


def _metadata(data: bytes, path: Path, flag: str) -> dict[str, str]:
    """The ``__metadata__`` of the safetensors bytes ``data`` (an 8-byte little-endian header
    length, then the JSON header), checked to be a string-to-string map."""
    try:
        size = int.from_bytes(data[:8], "little")
        if len(data) < 8 or size > len(data) - 8:
            raise ValueError("header length beyond the end of the file")
        header = json.loads(data[8 : 8 + size])
        metadata = header.get("__metadata__") or {} if isinstance(header, dict) else None
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise ValueError("its metadata is not a map of strings")
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{flag}: {str(path)!r} is not a readable safetensors file ({_first_line(error)})"
        ) from None
    return metadata


def _read_tensors(data: bytes, path: Path, flag: str) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(data)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{flag}: {str(path)!r} is not a readable safetensors file ({_first_line(error)})"
        ) from None


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Raise one :class:`CheckpointError` listing the missing and unexpected keys, the
    shape mismatches (``key: file shape vs model shape``) and the dtype mismatches (a
    floating-point tensor where the model has an integer one or the reverse) of
    ``state_dict``, if any. ``model`` may live on the meta device (nothing is allocated)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: {tuple(state_dict[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    kinds = [
        f"{k}: {state_dict[k].dtype} in the file, {expected[k].dtype} in the model"
        for k in expected
        if k in state_dict and state_dict[k].is_floating_point() != expected[k].is_floating_point()
    ]
    problems = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
        ("dtype mismatches", kinds),
    ):
        if items:
            more = f", ... ({len(items) - 8} more)" if len(items) > 8 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:8])}{more}")
    if problems:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        architecture = cfg.get("architecture", type(model).__name__)
        raise CheckpointError(
            f"{source}: does not fit model {architecture!r} ({'; '.join(problems)})"
        )


def load_checkpoint(model: nn.Module, path: str | os.PathLike, weights: str = "model") -> nn.Module:
    """Load the weights shiftwise wrote at ``path`` into ``model`` strictly; returns ``model``.

    ``path``: any file :func:`read_weights` reads (``model.safetensors``, a converted file,
    a ``checkpoint.pt`` or its run directory). Raises :class:`MissingFileError`, or one
    :class:`CheckpointError` naming the model the file was written for, or the differing keys
    and shapes.
    """
    tensors, metadata = read_weights(path, weights, flag="path")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    architecture, written_for = cfg.get("architecture"), metadata.get("model")
    try:
        check_state_dict(model, tensors, source=f"path {str(path)!r}")
    except CheckpointError as error:
        if written_for and architecture and written_for != architecture:
            raise CheckpointError(
                f"path: {str(path)!r} holds weights for model {written_for!r}, not {architecture!r}"
            ) from error
        raise
    model.load_state_dict(tensors, strict=True)
    return model


# ---------------------------------------------------------------------------------------------
# Training state


def _torch_bytes(value: Any) -> bytes:
    buffer = BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def save_training_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` (which must list its weights files under ``"weights"``) as the
    training state file ``path``, with the format and the digest of its content."""
    """Serialize in memory first: the file is then written by :func:`atomic_write`, whose
    ``OSError`` (disk full) is reported, instead of torch's zip writer failing mid-file."""
    payload = _torch_bytes(dict(state))
    outer = {
        "format": STATE_FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    atomic_write(path, _torch_bytes(outer))


def _read_state(path: Path, flag: str) -> dict[str, Any]:
    """The verified inner state of a ``checkpoint.pt`` (weights files not read)."""
    if not path.exists():
        raise MissingFileError(f"{flag}: no checkpoint at {str(path)!r}")
    outer = safe_torch_load(path, flag)
    if not isinstance(outer, dict) or outer.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{flag}: {str(path)!r} is not a shiftwise training checkpoint")
    payload = outer["payload"].numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
        raise CheckpointError(
            f"{flag}: {str(path)!r} is damaged (its content does not match the recorded sha256)"
        )
    state = safe_torch_load(BytesIO(payload), flag)
    if not isinstance(state, dict) or "weights" not in state:
        raise CheckpointError(f"{flag}: {str(path)!r} is not a shiftwise training checkpoint")
    return state


def referenced_weights_files(path: Path) -> set[str]:
    """Names of the weights files the state file ``path`` refers to (empty if unreadable)."""
    try:
        state = _read_state(path, "path")
    except (CheckpointError, MissingFileError):
        return set()
    return {entry["file"] for entry in state["weights"].values()}


def load_training_state(path: str | os.PathLike, flag: str = "path") -> dict[str, Any]:
    """The state of the ``checkpoint.pt`` at ``path`` with its weights, all verified.

    Adds ``"path"`` (the state file), ``"tensors"`` (``{"model": state_dict, "ema": ...}``)
    and ``"weights_metadata"`` to the saved state. Raises :class:`MissingFileError` or a
    one-line :class:`CheckpointError` naming the damaged or missing file.
    """
    path = Path(path)
    state = _read_state(path, flag)
    tensors, metadata = {}, {}
    for kind, entry in state["weights"].items():
        file = path.parent / entry["file"]
        if not file.exists():
            raise CheckpointError(
                f"{flag}: the weights file {entry['file']!r} of {str(path)!r} is missing"
            )
        tensors[kind], metadata[kind] = read_weights(file, kind, flag)
        if metadata[kind].get("sha256") != entry["sha256"]:
            raise CheckpointError(
                f"{flag}: {str(file)!r} is not the weights file {str(path)!r} was saved with "
                "(sha256 differs)"
            )
    return {**state, "path": str(path), "tensors": tensors, "weights_metadata": metadata}


def find_resumable(path: str | os.PathLike, flag: str = "path") -> dict[str, Any]:
    """The newest checkpoint under ``path`` that verifies (see :func:`load_training_state`).

    ``path`` is a state file (it must verify) or a run directory: ``checkpoint.pt`` is tried
    first, then ``checkpoint-previous.pt``; a damaged one is skipped with a warning (an
    unsafe one is refused). Raises one :class:`CheckpointError` when none verifies.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{flag}: no checkpoint at {str(path)!r}")
    if not path.is_dir():
        return load_training_state(path, flag)
    failures = []
    for name in (STATE_NAME, PREVIOUS_NAME):
        if not (path / name).exists():
            continue
        try:
            state = load_training_state(path / name, flag)
        except UnsafeFileError:  # never fall back past a file crafted to run code
            raise
        except CheckpointError as error:
            failures.append(str(error).removeprefix(f"{flag}: "))
            logger.warning("%s", error)
            continue
        if failures:
            logger.warning("%s: resuming from the previous checkpoint %s", flag, state["path"])
        return state
    if not failures:
        raise MissingFileError(f"{flag}: no {STATE_NAME} in {str(path)!r}")
    raise CheckpointError(f"{flag}: no checkpoint in {str(path)!r} verifies: {'; '.join(failures)}")
