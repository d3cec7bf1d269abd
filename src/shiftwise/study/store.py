"""The run store: finished runs kept by what defines them, so that no run trains twice.

A run's key is the SHA-256 of the training options that define it, resolved (defaults and
recipe filled in): every option whose change makes another run (model, its arguments, data,
epochs, seed, optimiser, augmentation, sparsity) and ``val_limit``. Where and how it runs
(output, device, progress, workers) is left out. Two entries of one grid, or of two grids
sharing a store (``shiftwise study ... --store DIR``), that resolve to the same run share one
run directory ``<store>/<model>-<data>-e<epochs>-seed<N>-<key[:12]>/``.

A finished run holds ``study-run.json``, written last and atomically: its metrics, times and
size, the key and resolved options it was trained with, and a SHA-256 of its own content.
A record that does not parse, does not match its run or fails its digest is refused with one
line (never silently retrained over, never deleted).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shiftwise.errors import UsageError

__all__ = [
    "RESULT_NAME",
    "STORE_MARKER",
    "read_json",
    "read_record",
    "record_bytes",
    "run_dirname",
    "run_key",
]

RESULT_NAME = "study-run.json"
STORE_MARKER = ".shiftwise-study-store"
MAX_JSON_BYTES = 1 << 20  # a record or study.json is a few kB

# Fields of the record: name -> the check its value must pass.
_NUMBER = (int, float)


def _finite(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and all(_finite(v) for v in value)


def _stages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(s, dict)
        and isinstance(s.get("stage"), str)
        and _count(s.get("active"))
        and _count(s.get("total"))
        and s["total"] > 0
        for s in value
    )


_FIELDS = {
    "key": lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
    "config": lambda v: isinstance(v, dict),
    "seed": _count,
    "model": lambda v: isinstance(v, str),
    "data": lambda v: isinstance(v, str),
    "epochs": lambda v: _count(v) and v >= 1,
    "top1": lambda v: _finite(v) and 0 <= v <= 100,
    "top5": lambda v: v is None or (_finite(v) and 0 <= v <= 100),
    "chance": lambda v: _finite(v),
    "training_seconds": lambda v: _finite(v) and v > 0,
    "images_per_second": lambda v: _finite(v) and v > 0,
    "wall_seconds": lambda v: _finite(v) and v > 0,
    "params": lambda v: _finite(v) and v >= 0,
    "macs": lambda v: _finite(v) and v >= 0,
    "val_top1": _numbers,
    "epoch_seconds": _numbers,
    "stages": _stages,
}


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def run_key(config: Any) -> tuple[str, dict[str, Any]]:
    """``(key, options)`` of a resolved :class:`~shiftwise.training.TrainConfig`: the options
    that define the run (``{"section.field": value}``) and the SHA-256 of their canonical
    JSON."""
    from shiftwise.training.config import config_to_dict, iter_options

    values = config_to_dict(config)
    options = {}
    for _, path, _, option in iter_options():
        if option.defines_run or path == "data.val_limit":
            section, name = path.split(".")
            options[path] = values[section][name]
    options = json.loads(_canonical(options))  # tuples as lists, as the record stores them
    return hashlib.sha256(_canonical(options)).hexdigest(), options


def run_dirname(model: str, data: str, epochs: int, seed: int, key: str) -> str:
    """The run's directory name in the store (readable, unique by ``key``; a data folder is
    named by its last component)."""
    data = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(data).name)
    return f"{model}-{data}-e{epochs}-seed{seed}-{key[:12]}"


def record_bytes(record: Mapping[str, Any]) -> bytes:
    """``record`` with its ``sha256`` (of the rest, canonical JSON) as the file's bytes."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    digest = hashlib.sha256(_canonical(body)).hexdigest()
    return json.dumps({**body, "sha256": digest}, indent=1).encode()


def _refuse(path: Path, what: str) -> UsageError:
    return UsageError(
        f"study: {str(path)!r} is not a finished-run record shiftwise wrote ({what}); "
        "move it away to train that run again"
    )


def read_json(path: Path, option: str) -> Any:
    """The JSON value in the regular file ``path`` (at most :data:`MAX_JSON_BYTES`); a file
    that is not one, too large, not JSON or nested too deeply is one :class:`UsageError`."""
    from shiftwise.io import read_regular_file

    data = read_regular_file(path, option)
    if len(data) > MAX_JSON_BYTES:
        raise UsageError(f"{option}: {str(path)!r} is larger than {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else "not JSON"
        raise UsageError(f"{option}: {str(path)!r} is damaged ({reason})") from None


def read_record(path: Path, key: str) -> dict[str, Any] | None:
    """The checked record at ``path`` of the run with ``key``; ``None`` when there is none
    (the run has not finished). Raises :class:`UsageError` for a damaged or foreign record."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        record = read_json(path, "study")
    except UsageError as error:
        raise _refuse(path, str(error).split("(")[-1].rstrip(")")) from None
    if not isinstance(record, dict):
        raise _refuse(path, f"a JSON {type(record).__name__}, expected an object")
    digest = record.get("sha256")
    body = {k: v for k, v in record.items() if k != "sha256"}
    if digest != hashlib.sha256(_canonical(body)).hexdigest():
        raise _refuse(path, "its sha256 does not match its content")
    for name, check in _FIELDS.items():
        if name not in record or not check(record[name]):
            raise _refuse(path, f"field {name!r} missing or invalid")
    if record["key"] != key or hashlib.sha256(_canonical(record["config"])).hexdigest() != key:
        raise _refuse(path, "it records another run's options")
    return record
