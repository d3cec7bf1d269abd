"""A study grid: named entries (training options x seeds), parsed from TOML or a mapping.

A grid file is TOML::

    name = "my-grid"
    seeds = [0, 1, 2]                 # seeds of every entry (an entry may set its own)

    [defaults]                        # options every entry starts from
    data = "bundled"
    epochs = 2
    width_factor = 0.5

    [[runs]]
    name = "sw"                       # the configuration's name (letters, digits, . _ -)
    model = "sw_atto"
    groups = ["paths", "shuffles"]    # optional: the ablation axes this entry is a setting of
    setting = "default"               # optional: its label on those axes (default: the name)
    model_kwargs = { operator_kwargs = { n_paths = 2 } }

    [[runs]]
    name = "convnext-matched"
    model = "convnext_atto"
    match_time = { of = "sw", per_epoch = "convnext" }

Every other key of a run is a training option as
:func:`~shiftwise.training.config_from_options` names it (``model``, ``data``, ``epochs``, ``lr``,
``width_factor``, ``sparse``, ``density``, ...); ``seed``, ``output``, ``resume`` and
``progress`` belong to the study. An option given as a list is an axis: the entry expands to
one entry per combination of its lists (``model = ["sw_atto", "slak_atto"]`` gives
``NAME-sw_atto`` and ``NAME-slak_atto``), so models x overrides x data x epochs is one entry.

``match_time`` makes an entry's epoch count depend on measured times, resolved once the
entries it names have finished (see :func:`matched_epochs`).
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftwise.errors import MissingFileError, UsageError

__all__ = [
    "STUDY_OPTIONS",
    "Entry",
    "Grid",
    "MatchTime",
    "load_grid",
    "matched_epochs",
    "parse_grid",
]

STUDY_OPTIONS = ("seed", "output", "resume", "progress")  # set by the study, never by a grid
_GRID_KEYS = {"name", "description", "seeds", "defaults", "runs"}
_ENTRY_KEYS = {"name", "groups", "setting", "seeds", "match_time"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_SEED = 2**63 - 1  # the trainer's bound (``shiftwise train --seed``)
MAX_GRID_BYTES = 1 << 20
MAX_RUNS = 10_000  # runs of one grid (entries x seeds)


@dataclass(frozen=True)
class MatchTime:
    """Epochs chosen so that the entry's training time matches entry ``of``'s: the mean
    training time of ``of``'s runs divided by the mean per-epoch time of ``per_epoch``'s runs
    (an entry of the same model at a fixed epoch count), rounded, at least 1."""

    of: str
    per_epoch: str


@dataclass(frozen=True)
class Entry:
    """One configuration of a grid: flat training options, run once per seed."""

    name: str
    options: Mapping[str, Any]
    seeds: tuple[int, ...]
    groups: tuple[str, ...] = ()
    setting: str | None = None
    match_time: MatchTime | None = None

    def run_id(self, seed: int) -> str:
        """The directory name of this entry's run with ``seed``."""
        return f"{self.name}-seed{seed}"

    @property
    def label(self) -> str:
        """Its label on its ablation axes (the setting, else the name)."""
        return self.setting or self.name


@dataclass(frozen=True)
class Grid:
    """Named entries in the order they run (an entry after the entries it depends on)."""

    name: str
    entries: tuple[Entry, ...]
    description: str = ""

    def entry(self, name: str) -> Entry:
        return next(e for e in self.entries if e.name == name)

    def runs(self) -> list[tuple[Entry, int]]:
        """``(entry, seed)`` of every run, in order."""
        return [(entry, seed) for entry in self.entries for seed in entry.seeds]


def matched_epochs(target_seconds: Sequence[float], per_epoch_seconds: Sequence[float]) -> int:
    """``round(mean(target_seconds) / mean(per_epoch_seconds))``, at least 1: the epoch count
    whose training time matches the target runs' mean training time."""
    target = sum(target_seconds) / len(target_seconds)
    per_epoch = sum(per_epoch_seconds) / len(per_epoch_seconds)
    return max(1, round(target / per_epoch))


def _error(grid: str, entry: str | None, message: str) -> UsageError:
    where = f"grid {grid!r}" + (f" entry {entry!r}" if entry is not None else "")
    return UsageError(f"{where}: {message}")


def _seeds(value: object, grid: str, entry: str | None) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in value
        )
        or len(set(value)) != len(value)
    ):
        raise _error(grid, entry, f"seeds: expected distinct integers 0 to 2**63-1, got {value!r}")
    return tuple(value)


def _label(value: object) -> str:
    text = Path(value).name if isinstance(value, str) else str(value)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _expand(grid: str, name: str, options: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One ``(name, options)`` per combination of the list-valued options (the axes)."""
    axes = [key for key, value in options.items() if isinstance(value, list)]
    for key in axes:
        if not options[key]:
            raise _error(grid, name, f"{key}: an empty list (an axis without values)")
    if math.prod(len(options[key]) for key in axes) > MAX_RUNS:
        raise _error(grid, name, f"its axes give more than {MAX_RUNS} entries")
    if not axes:
        return [(name, options)]
    expanded = []
    for values in itertools.product(*(options[key] for key in axes)):
        chosen = {**options, **dict(zip(axes, values, strict=True))}
        expanded.append(("-".join([name, *map(_label, values)]), chosen))
    return expanded


def _match_time(value: object, grid: str, entry: str) -> MatchTime:
    if not isinstance(value, dict) or set(value) != {"of", "per_epoch"}:
        raise _error(
            grid, entry, f"match_time: expected {{ of = ENTRY, per_epoch = ENTRY }}, got {value!r}"
        )
    return MatchTime(str(value["of"]), str(value["per_epoch"]))


def _parse_entries(
    grid: str, table: object, defaults: dict[str, Any], seeds: tuple[int, ...] | None
) -> list[Entry]:
    if not isinstance(table, dict):
        raise _error(grid, None, f"each [[runs]] must be a table, got {table!r}")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _error(grid, None, f"run name: expected letters, digits, '.', '_', '-', got {name!r}")
    options = {**defaults, **{k: v for k, v in table.items() if k not in _ENTRY_KEYS}}
    for key in STUDY_OPTIONS:
        if key in options:
            raise _error(grid, name, f"{key}: set by the study, not by a grid")
    if "seeds" in table:
        seeds = _seeds(table["seeds"], grid, name)
    if seeds is None:
        raise _error(grid, name, "seeds: not given (set seeds at the top or in the entry)")
    match = None
    if "match_time" in table:
        match = _match_time(table["match_time"], grid, name)
        if "epochs" in options and "epochs" not in defaults:
            raise _error(grid, name, "epochs: given together with match_time")
        options.pop("epochs", None)
    setting, groups = table.get("setting"), table.get("groups", [])
    if setting is not None and not isinstance(setting, str):
        raise _error(grid, name, f"setting: expected a string, got {setting!r}")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise _error(grid, name, f"groups: expected a list of strings, got {groups!r}")
    return [
        Entry(full, options, seeds, tuple(groups), setting, match)
        for full, options in _expand(grid, name, options)
    ]


def parse_grid(data: Mapping[str, Any], default_name: str = "grid") -> Grid:
    """The :class:`Grid` of a parsed TOML document (or an equal mapping); checks its shape:
    known keys, unique names, seeds, and ``match_time`` naming earlier entries.
    Training options are checked by :func:`shiftwise.study.check_grid`."""
    name = data.get("name", default_name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise _error(str(name), None, "name: expected letters, digits, '.', '_', '-'")
    unknown = sorted(set(data) - _GRID_KEYS)
    if unknown:
        raise _error(name, None, f"unknown key {unknown[0]!r}, expected {sorted(_GRID_KEYS)}")
    seeds = _seeds(data["seeds"], name, None) if "seeds" in data else None
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise _error(name, None, f"defaults: expected a table, got {defaults!r}")
    runs = data.get("runs")
    if not isinstance(runs, list) or not runs:
        raise _error(name, None, "runs: expected at least one [[runs]] table")
    entries: list[Entry] = []
    for table in runs:
        for entry in _parse_entries(name, table, dict(defaults), seeds):
            if any(e.name == entry.name for e in entries):
                raise _error(name, entry.name, "name: used by two entries")
            if entry.match_time is not None:
                earlier = {e.name for e in entries}
                for ref in (entry.match_time.of, entry.match_time.per_epoch):
                    if ref not in earlier:
                        raise _error(
                            name, entry.name, f"match_time: {ref!r} is not an earlier entry"
                        )
            entries.append(entry)
            if sum(len(e.seeds) for e in entries) > MAX_RUNS:
                raise _error(name, None, f"more than {MAX_RUNS} runs")
    return Grid(name, tuple(entries), str(data.get("description", "")))


def load_grid(source: str) -> Grid:
    """The built-in grid named ``source`` (see :data:`shiftwise.study.builtin.GRIDS`) or the
    grid in the TOML file at ``source``."""
    from shiftwise.study.builtin import GRIDS

    if source in GRIDS:
        return parse_grid(GRIDS[source], source)
    path = Path(source)
    if not path.is_file():
        raise MissingFileError(
            f"GRID: {source!r} is neither a built-in grid ({', '.join(GRIDS)}) nor a file"
        )
    from shiftwise.io import read_regular_file

    text = read_regular_file(path, "GRID")
    if len(text) > MAX_GRID_BYTES:
        raise UsageError(f"GRID: {source!r} is larger than {MAX_GRID_BYTES} bytes")
    try:
        data = tomllib.loads(text.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise UsageError(f"GRID: {source!r} is not valid TOML ({reason})") from None
    except RecursionError:
        raise UsageError(f"GRID: {source!r} is nested too deeply") from None
    return parse_grid(data, _label(path.stem))
