"""A run directory and every file in it: claiming and locking it, choosing the resume point a
run continues from, and writing resume points, logs and final weights (formats in
:mod:`shiftwise.io`).

**Ownership.** A run directory is shiftwise's when it holds the manifest :data:`MANIFEST_NAME`,
which records every file shiftwise wrote there (name, size, SHA-256). A run claims a new or
empty directory (writing the manifest), or an owned one; it replaces or deletes only files
the manifest records, unchanged since they were written (or, for a resume point's files,
damaged: failing their own digest), so a forged or copied manifest cannot make it overwrite
a user's file. A name is recorded (as *pending*) before its file is
written and gets its size and digest after, so a run killed between the two leaves nothing
unrecorded. A directory an earlier shiftwise wrote (no manifest, or the first manifest format,
which recorded no files) is adopted only when every file with one of shiftwise's names is a
file shiftwise writes there (a verified state or weights file, a log, a curve); without a
manifest it must also hold nothing else, and the run must resume from it.

**Locking.** The claim takes an advisory lock (``fcntl.flock``) on :data:`LOCK_NAME`, which
records the holder's PID: a second process claiming the same directory is refused with one line
naming that PID. The kernel drops the lock when the holder exits in any way (SIGKILL included),
so a stale lock file never blocks a later run. Run files are opened with ``O_NOFOLLOW`` (and the
lock is created with ``O_EXCL``): a symbolic link with one of their names is refused, never
followed.

**Resume points** (``checkpoint.pt`` plus its weights files): the weights files are written
first, the state (the commit point) last, the state it replaces kept as
``checkpoint-previous.pt`` (a hard link, so there is no moment without a complete state file),
and only the weights files referenced by neither deleted. A run that fails before writing any
file removes its manifest and lock again (and the directory, when it created it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from shiftwise.errors import DivergedError, UsageError, WriteError
from shiftwise.io import (
    PREVIOUS_NAME,
    STATE_FORMAT,
    STATE_NAME,
    atomic_link,
    atomic_write,
    find_resumable,
    non_finite,
    os_error_reason,
    read_weights,
    referenced_weights_files,
    save_training_state,
    save_weights,
    weights_file,
)
from shiftwise.training.config import (
    Difference,
    TrainConfig,
    config_from_dict,
    config_from_options,
    defaults,
    merge,
    resolve,
)
from shiftwise.version import __version__

__all__ = [
    "LOCK_NAME",
    "MANIFEST_NAME",
    "RunDirectory",
    "claim_run_directory",
    "output_directory",
    "resume_point_and_config",
    "saved_config",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".shiftwise-run.json"
LOCK_NAME = ".shiftwise-run.lock"
MANIFEST_FORMAT = "shiftwise-run-2"
OLD_MANIFEST_FORMAT = "shiftwise-run-1"  # recorded no files
FINAL_NAMES = ("model.safetensors", "model-diverged.safetensors")
LOG_NAMES = ("log.csv", "log.json", "curve.png")
CHECKPOINT_WEIGHTS_PATTERN = re.compile(r"weights-e\d{4}-s\d{8}(-ema)?\.safetensors")
# The names of the files a run writes (not the manifest and lock), and of their temporary files.
RUN_FILE_PATTERN = re.compile(
    r"checkpoint(-previous)?\.pt|(model|model-diverged)(-ema)?\.safetensors|log\.csv|log\.json"
    r"|curve\.png|weights-e\d{4}-s\d{8}(-ema)?\.safetensors"
)
TEMP_PATTERN = re.compile(r"\.(?P<name>.+)\.\d+-[0-9a-f]{8}\.tmp")
_OPEN_FLAGS = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


# ---------------------------------------------------------------------------------------------
# Choosing the resume point and the output directory


def saved_config(resume: dict[str, Any]) -> TrainConfig:
    """The resolved config a resume point records (older files: a flat ``run`` record);
    fields it predates take their defaults."""
    if "config" in resume:
        return merge(defaults(), config_from_dict(resume["config"]))
    if "run" in resume:
        flat = {k: v for k, v in resume["run"].items() if k not in ("recipe", "changes")}
        return merge(defaults(), config_from_options({**flat, **resume["run"]["recipe"]}))
    raise UsageError(f"run.resume: {resume['path']!r} records no run configuration")


def resume_point_and_config(
    requested: TrainConfig,
) -> tuple[dict[str, Any] | None, TrainConfig, list[Difference]]:
    """The verified resume point of ``run.resume`` (``None``: a fresh run), the resolved
    config and what the resume changes (refused unless ``run.allow_config_change``)."""
    if requested.run.resume is None:
        config, differences = resolve(requested)
        return None, config, differences
    resume = find_resumable(requested.run.resume, "run.resume")
    config, differences = resolve(requested, saved_config(resume))
    changes = "; ".join(str(d) for d in differences)
    if differences and not config.run.allow_config_change:
        raise UsageError(
            f"run.resume: the config changes the run saved in {resume['path']!r} "
            f"({changes}); drop those fields or set run.allow_config_change"
        )
    if differences:
        logger.warning("run.resume with a changed configuration: %s", changes)
    return resume, config, differences


def output_directory(config: TrainConfig, resume: dict[str, Any] | None) -> Path:
    """The run directory: ``run.output``, else the resume point's directory, else a new
    ``runs/<model>-<data>-<time>``."""
    if config.run.output is not None:
        return Path(config.run.output)
    if resume is not None:
        return Path(resume["path"]).parent
    stamp = time.strftime("%Y%m%d-%H%M%S")
    data = Path(config.data.name).name or "data"
    return Path("runs") / f"{config.model.name}-{data}-{stamp}"


# ---------------------------------------------------------------------------------------------
# Reading run files without following links


def _open_run_file(path: Path, flags: int, option: str, mode: int = 0o644) -> int:
    """A descriptor of the regular file ``path`` opened with ``O_NOFOLLOW``; a link or
    anything but a regular file is refused with one :class:`UsageError`."""
    try:
        fd = os.open(path, flags | _OPEN_FLAGS | os.O_NONBLOCK, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UsageError(
                f"{option}: {str(path)!r} is a symbolic link; shiftwise never follows a link "
                "among its run files (remove it or choose another directory)"
            ) from None
        raise UsageError(
            f"{option}: cannot open {str(path)!r} ({os_error_reason(error)})"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{option}: {str(path)!r} is not a regular file")
    return fd


def _read_run_file(path: Path, option: str) -> bytes:
    fd = _open_run_file(path, os.O_RDONLY, option)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of the regular file ``path`` (read without following a link)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        size = 0
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _signature(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_ino, info.st_size, info.st_mtime_ns


def _written_by_shiftwise(path: Path) -> bool:
    """Whether ``path`` (named as a run file) holds what shiftwise writes under that name."""
    name = path.name
    try:
        if path.is_symlink() or not path.is_file():
            return False
        if TEMP_PATTERN.fullmatch(name):
            return True
        if name.endswith(".pt"):
            return bool(referenced_weights_files(path))
        if name.endswith(".safetensors"):
            read_weights(path, "ema" if name.endswith("-ema.safetensors") else "model")
            return True
        data = path.read_bytes()
        if name == "log.json":
            records = json.loads(data)
            return isinstance(records, list) and all(
                isinstance(r, dict) and "epoch" in r for r in records
            )
        if name == "log.csv":
            return data.startswith(b"epoch,")
        return name == "curve.png" and data.startswith(b"\x89PNG\r\n\x1a\n")
    except (OSError, ValueError):  # UsageError, CheckpointError are ValueErrors
        return False


def _is_damaged_resume_file(path: Path) -> bool:
    """Whether ``path`` is a state or checkpoint weights file that no longer verifies (a
    damaged resume point: :func:`shiftwise.io.find_resumable` falls back past it)."""
    resume_file = path.name in (STATE_NAME, PREVIOUS_NAME)
    resume_file = resume_file or bool(CHECKPOINT_WEIGHTS_PATTERN.fullmatch(path.name))
    return resume_file and not _written_by_shiftwise(path)


def _is_run_file(name: str) -> bool:
    """Whether ``name`` is one a run writes, or the temporary file of one (or of the manifest)."""
    temp = TEMP_PATTERN.fullmatch(name)
    if temp:
        return temp["name"] == MANIFEST_NAME or bool(RUN_FILE_PATTERN.fullmatch(temp["name"]))
    return bool(RUN_FILE_PATTERN.fullmatch(name))


# ---------------------------------------------------------------------------------------------
# The claimed directory


class RunDirectory:
    """A claimed (locked) run directory and the files shiftwise wrote in it.

    Made by :func:`claim_run_directory`; every write goes through :meth:`write`,
    :meth:`save_weights` or :meth:`save_resume_point`, which record the file in the manifest
    and refuse to replace a file the manifest does not record unchanged.
    """

    def __init__(self, path: Path, created: bool) -> None:
        self.path, self.created = path, created
        self._lock_fd, self.created_lock = -1, False
        self.files: dict[str, Any] = {}  # name -> {"size", "sha256"}, or None while being written
        self._known: dict[str, tuple[int, int, int]] = {}  # files verified by this process
        self.wrote_manifest = False  # this claim made the directory shiftwise's
        self.latest: set[str] | None = None  # weights files of a trusted checkpoint.pt
        self.previous: set[str] = set()

    # -- files -----------------------------------------------------------------------------

    def check_replaceable(self, name: str) -> None:
        """Raise :class:`WriteError` unless ``name`` is missing or a regular file this
        directory's manifest records (pending, or with its size and digest unchanged)."""
        path = self.path / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(info.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            raise WriteError(f"refusing to replace {str(path)!r}: it is {kind}")
        if name not in self.files:
            raise WriteError(
                f"refusing to replace {str(path)!r}: shiftwise did not write it (it is not in "
                f"the manifest {MANIFEST_NAME!r})"
            )
        record = self.files[name]
        if record is None or self._known.get(name) == _signature(path):
            return
        if _file_digest(path) != (record["size"], record["sha256"]):
            if not _is_damaged_resume_file(path):
                raise WriteError(
                    f"refusing to replace {str(path)!r}: it changed since shiftwise wrote it"
                )
            logger.warning("%s is damaged (it fails its own digest): it will be replaced", path)
        self._known[name] = _signature(path)

    def _begin(self, names: Iterable[str]) -> None:
        """Check ``names`` may be (re)written and record them as pending."""
        names = list(names)
        for name in names:
            self.check_replaceable(name)
        if any(name not in self.files or self.files[name] is not None for name in names):
            for name in names:
                self.files[name] = None
            self._write_manifest()

    def _commit(self, names: Iterable[str]) -> None:
        """Record the size and digest of ``names`` as written (a missing one is dropped)."""
        for name in names:
            path = self.path / name
            if not path.is_file() or path.is_symlink():
                self.files.pop(name, None)
                continue
            size, digest = _file_digest(path)
            self.files[name] = {"size": size, "sha256": digest}
            self._known[name] = _signature(path)
        self._write_manifest()

    def _try_commit(self, names: Iterable[str]) -> None:
        """:meth:`_commit` after a failed write (whose error is the one to report)."""
        with contextlib.suppress(WriteError, OSError):  # the names stay pending: the next
            self._commit(names)  # claim accepts or removes their files

    def _write_manifest(self) -> None:
        manifest = {
            "format": MANIFEST_FORMAT,
            "shiftwise_version": __version__,
            "files": dict(sorted(self.files.items())),
        }
        atomic_write(self.path / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
        self.wrote_manifest = True

    def remove(self, names: Iterable[str]) -> None:
        """Delete the files ``names`` (each one this directory records unchanged)."""
        names = [name for name in names if os.path.lexists(self.path / name)]
        for name in names:
            self.check_replaceable(name)
        for name in names:
            (self.path / name).unlink(missing_ok=True)
            self.files.pop(name, None)
            self._known.pop(name, None)
        if names:
            self._write_manifest()

    def write(self, name: str, data: bytes | Callable[[BinaryIO], None]) -> Path:
        """Write the file ``name`` atomically (:func:`shiftwise.io.atomic_write`), recorded."""
        self._begin([name])
        path = atomic_write(self.path / name, data)
        self._commit([name])
        return path

    def read(self, name: str) -> bytes | None:
        """The bytes of the run file ``name`` (``None`` if missing); never follows a link."""
        if not os.path.lexists(self.path / name):
            return None
        return _read_run_file(self.path / name, "run.output")

    def save_weights(
        self, name: str, tensors: Mapping[str, Mapping[str, torch.Tensor]], **kwargs: Any
    ) -> Path:
        """Write ``tensors`` (``{"model": state_dict, "ema": ...}``) as ``name`` and its
        ``-ema`` sibling (:func:`shiftwise.io.save_weights` arguments in ``kwargs``)."""
        files = {kind: weights_file(self.path / name, kind) for kind in tensors}
        names = [file.name for file in files.values()]
        self._begin(names)
        try:
            for kind, state_dict in tensors.items():
                save_weights(state_dict, files[kind], weights=kind, **kwargs)
        except BaseException:
            self._try_commit(names)
            raise
        self._commit(names)
        return self.path / name

    # -- resume points -------------------------------------------------------------------

    def continue_from(self, resumed: Mapping[str, Any] | None) -> None:
        """Note the resume point ``resumed`` a run continues from (``None``: a fresh run): when
        it is this directory's ``checkpoint.pt`` that file becomes ``checkpoint-previous.pt``
        at the first save; a damaged ``checkpoint.pt`` is never promoted to previous."""
        if resumed is None or Path(resumed["path"]).parent != self.path:
            return
        files = {entry["file"] for entry in resumed["weights"].values()}
        if Path(resumed["path"]).name == STATE_NAME:
            self.latest = files
            self.previous = referenced_weights_files(self.path / PREVIOUS_NAME)
        else:
            self.previous = files

    def save_resume_point(
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
        files = {kind: weights_file(self.path / f"{stem}.safetensors", kind) for kind in tensors}
        entries = {kind: {"file": file.name, "sha256": ""} for kind, file in files.items()}
        latest = self.path / STATE_NAME
        names = [*(file.name for file in files.values()), STATE_NAME, PREVIOUS_NAME]
        try:
            self._begin(names)
            for kind, state_dict in tensors.items():
                entries[kind]["sha256"] = save_weights(
                    state_dict,
                    files[kind],
                    model=model,
                    model_kwargs=model_kwargs,
                    weights=kind,
                    metadata=metadata,
                )
            if self.latest is not None and latest.is_file():
                atomic_link(latest, self.path / PREVIOUS_NAME)
                self.previous = self.latest
            save_training_state(latest, {**state, "format": STATE_FORMAT, "weights": entries})
        except (WriteError, OSError) as error:
            keep = (self.latest or set()) | self.previous
            for entry in entries.values():  # this resume point's files, unless in use
                if entry["file"] not in keep:
                    (self.path / entry["file"]).unlink(missing_ok=True)
            self._try_commit(names)
            reason = str(error) if isinstance(error, WriteError) else os_error_reason(error)
            raise WriteError(f"resume point not saved: {reason}; {self.safe_on_disk()}") from None
        self._commit(names)
        self.latest = {entry["file"] for entry in entries.values()}
        self._remove_orphans()
        return latest

    def _remove_orphans(self) -> None:
        """Delete the checkpoint weights files no state file refers to."""
        keep = (self.latest or set()) | self.previous
        if self.latest is None:  # a claim: the state files on disk say what is in use
            keep = set()
            for name in (STATE_NAME, PREVIOUS_NAME):
                keep |= referenced_weights_files(self.path / name)
        self.remove(
            name
            for name in self.files
            if CHECKPOINT_WEIGHTS_PATTERN.fullmatch(name) and name not in keep
        )

    def safe_on_disk(self) -> str:
        """What a failed or refused save leaves usable, in words (for error messages)."""
        return safe_on_disk(self.path)

    # -- claim and release -----------------------------------------------------------------

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def abandon(self) -> None:
        """Release, and remove what this claim made and no longer needs: the lock file it
        created, the manifest it wrote when no recorded file exists, the directory it created
        when that leaves it empty."""
        self.release()
        if self.created_lock:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
        if self.wrote_manifest and not any(os.path.lexists(self.path / n) for n in self.files):
            (self.path / MANIFEST_NAME).unlink(missing_ok=True)
        if self.created:
            with contextlib.suppress(OSError):  # not empty
                self.path.rmdir()


def safe_on_disk(directory: Path) -> str:
    """What a failed or refused save in ``directory`` leaves usable, in words."""
    if (directory / STATE_NAME).is_file():
        return f"the last resume point {str(directory / STATE_NAME)!r} is untouched"
    return f"no resume point of this run was written to {str(directory)!r} yet"


def _lock(path: Path, option: str) -> tuple[int, bool]:
    """An open descriptor of ``path/LOCK_NAME`` holding an exclusive flock (created with
    ``O_EXCL``, or an earlier run's regular file; never through a link)."""
    lock_path = path / LOCK_NAME
    created = True
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o644)
    except FileExistsError:
        fd, created = _open_run_file(lock_path, os.O_RDWR, option), False
    except OSError as error:
        raise UsageError(
            f"{option}: cannot write to {str(path)!r} ({error.strerror or error})"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise UsageError(
                f"{option}: cannot lock {str(lock_path)!r} ({error.strerror or error})"
            ) from None
        raise UsageError(
            f"{option}: {str(path)!r} is in use by another shiftwise run (PID {holder}); "
            "wait for it to finish or choose another directory"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, created


def _manifest(path: Path, option: str) -> dict[str, Any] | None:
    """The manifest of ``path`` (``None`` if there is none or it is not one)."""
    if not os.path.lexists(path / MANIFEST_NAME):
        return None
    try:
        manifest = json.loads(_read_run_file(path / MANIFEST_NAME, option))
    except ValueError as error:
        if isinstance(error, UsageError):
            raise
        return None
    if not isinstance(manifest, dict):
        return None
    if manifest.get("format") == OLD_MANIFEST_FORMAT:
        return {"files": None}
    files = manifest.get("files")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
        return None
    valid = all(
        isinstance(name, str)
        and (
            record is None
            or (
                isinstance(record, dict)
                and isinstance(record.get("size"), int)
                and isinstance(record.get("sha256"), str)
            )
        )
        for name, record in files.items()
    )
    return {"files": files} if valid else None


def _refuse(option: str, path: Path, names: list[str], why: str) -> UsageError:
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return UsageError(
        f"{option}: {str(path)!r} {why} (it holds {names[0]!r}{more}); "
        "choose a new or empty directory"
    )


def claim_run_directory(
    path: str | os.PathLike, *, resuming: bool = False, option: str = "run.output"
) -> RunDirectory:
    """Create (if needed), check and lock the run directory ``path``; leftovers of
    interrupted writes there are removed.

    Accepted: a new or empty directory, an owned one (see the module docstring), or, when
    ``resuming`` from it, one an earlier shiftwise wrote. A fresh run (not ``resuming``) is
    refused a directory holding a resume point or final weights. Anything else raises one
    :class:`UsageError` naming ``option`` and a file found there, as does a directory another
    process holds (naming its PID). Nothing is written to a refused directory.
    """
    path = Path(path)
    created = not os.path.lexists(path)
    if not created and not path.is_dir():
        raise UsageError(f"{option}: {str(path)!r} exists and is not a directory")
    if created:
        try:
            path.mkdir(parents=True)
        except OSError as error:
            raise UsageError(
                f"{option}: cannot write to {str(path)!r} ({os_error_reason(error)})"
            ) from None
    claim = RunDirectory(path, created)
    try:
        claim._lock_fd, claim.created_lock = _lock(path, option)
        _adopt(claim, resuming, option)
    except BaseException:
        claim.abandon()
        raise
    return claim


def _adopt(claim: RunDirectory, resuming: bool, option: str) -> None:
    """Fill ``claim.files`` from the manifest, or adopt an earlier shiftwise's files, after
    refusing what the module docstring says (before anything is written); then remove the
    leftovers of interrupted writes."""
    path = claim.path
    listing = sorted(p.name for p in path.iterdir() if p.name not in (MANIFEST_NAME, LOCK_NAME))
    manifest = _manifest(path, option)
    named = [name for name in listing if _is_run_file(name)]
    if manifest is None and os.path.lexists(path / MANIFEST_NAME):
        raise _refuse(option, path, [MANIFEST_NAME], "holds a manifest shiftwise cannot read")
    final = [name for name in (STATE_NAME, PREVIOUS_NAME, *FINAL_NAMES) if name in listing]
    if final and not resuming:
        raise UsageError(
            f"{option}: {str(path)!r} already holds a resume point or the weights of a run "
            f"({final[0]!r}); continue it with run.resume {str(path)!r} or choose another "
            "run.output"
        )
    legacy = manifest is None or manifest["files"] is None
    if manifest is not None and not legacy:
        claim.files = dict(manifest["files"])
        for name in named:
            if TEMP_PATTERN.fullmatch(name):
                continue
            try:
                claim.check_replaceable(name)
            except WriteError:
                why = "holds a file shiftwise did not write or that changed since"
                raise _refuse(option, path, [name], why) from None
    elif listing:
        if manifest is None:  # no manifest: only a resumed directory of shiftwise files
            others = [name for name in listing if name not in named]
            if others or not resuming:
                why = "is not empty and not a shiftwise run directory"
                raise _refuse(option, path, others or listing, why)
        foreign = [name for name in named if not _written_by_shiftwise(path / name)]
        if foreign:
            why = "holds a file with a name shiftwise uses that shiftwise did not write"
            raise _refuse(option, path, foreign, why)
    if legacy:  # record the adopted files (none in a new or empty directory)
        claim.files = {name: None for name in named if not TEMP_PATTERN.fullmatch(name)}
        claim._commit(list(claim.files))
    _remove_leftovers(claim, listing)


def _remove_leftovers(claim: RunDirectory, listing: list[str]) -> None:
    """Delete the temporary files of interrupted writes of run files and the checkpoint
    weights files no state file refers to (files named otherwise are never touched)."""
    temps = [name for name in listing if TEMP_PATTERN.fullmatch(name) and _is_run_file(name)]
    for name in temps:
        (claim.path / name).unlink(missing_ok=True)
    before = set(claim.files)
    claim._remove_orphans()
    removed = len(temps) + len(before - set(claim.files))
    if removed:
        logger.info(
            "removed %d leftover file(s) of interrupted writes from %s", removed, claim.path
        )
