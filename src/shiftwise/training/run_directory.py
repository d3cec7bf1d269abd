"""Owning and locking a run directory, so training never writes over files it did not make.

A run directory is *owned* by shiftwise when it holds the manifest :data:`MANIFEST_NAME`
(written when a run claims a new or empty directory). :func:`claim_run_directory` refuses a
directory holding anything else, so ``train --output`` never deletes or overwrites a user's
files. A directory written by an earlier shiftwise (a ``checkpoint.pt`` but no manifest) is
adopted only when the run resumes from it.

The claim also takes an advisory lock (``fcntl.flock``) on :data:`LOCK_NAME`, which records the
holder's PID: a second process claiming the same directory is refused with one line naming
that PID. The kernel drops the lock when the holder exits in any way (SIGKILL included), so a
stale lock file never blocks a later run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
from pathlib import Path

from shiftwise.errors import UsageError
from shiftwise.io import STATE_NAME, atomic_write
from shiftwise.version import __version__

__all__ = ["LOCK_NAME", "MANIFEST_NAME", "RunDirectory", "claim_run_directory"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".shiftwise-run.json"
LOCK_NAME = ".shiftwise-run.lock"
MANIFEST_FORMAT = "shiftwise-run-1"


class RunDirectory:
    """A claimed run directory: holds its lock until :meth:`release` (or process exit)."""

    def __init__(self, path: Path, lock_fd: int, created: bool) -> None:
        self.path, self._lock_fd, self.created = path, lock_fd, created

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def abandon(self) -> None:
        """Release, and remove the directory again when this claim created it and nothing but
        the manifest and lock file was written (a run refused after the claim)."""
        self.release()
        if not self.created:
            return
        ours = {MANIFEST_NAME, LOCK_NAME}
        if {p.name for p in self.path.iterdir()} <= ours:
            for name in ours:
                (self.path / name).unlink(missing_ok=True)
            self.path.rmdir()


def _is_owned(path: Path) -> bool:
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT


def _lock(path: Path, option: str) -> int:
    """An open descriptor of ``path/LOCK_NAME`` holding an exclusive flock."""
    lock_path = path / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
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
    return fd


def claim_run_directory(
    path: str | os.PathLike, *, resuming: bool = False, option: str = "output"
) -> RunDirectory:
    """Create (if needed), check and lock the run directory ``path``.

    Accepted: a new or empty directory (the manifest is written), a directory holding
    shiftwise's manifest, or, when ``resuming`` from it, one an earlier shiftwise wrote
    (holding a ``checkpoint.pt``; the manifest is added). Anything else raises one
    :class:`UsageError` naming ``option`` and a file found there, as does a directory another
    process holds (naming its PID). Nothing is written to a refused directory.
    """
    path = Path(path)
    created = not path.exists()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option}: {str(path)!r} exists and is not a directory")
    if not created and not _is_owned(path):
        # (the lock file, or a manifest's temporary file: a claim killed half-way)
        found = sorted(p.name for p in path.iterdir() if not p.name.startswith(".shiftwise-run."))
        legacy = resuming and (path / STATE_NAME).is_file()
        if found and not legacy:
            more = f" and {len(found) - 1} more" if len(found) > 1 else ""
            raise UsageError(
                f"{option}: {str(path)!r} is not empty and not a shiftwise run directory "
                f"(it holds {found[0]!r}{more}); choose a new or empty directory"
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"{option}: cannot write to {str(path)!r} ({error.strerror or error})"
        ) from None
    fd = _lock(path, option)
    claim = RunDirectory(path, fd, created)
    if not _is_owned(path):
        manifest = {"format": MANIFEST_FORMAT, "shiftwise_version": __version__}
        try:
            atomic_write(path / MANIFEST_NAME, json.dumps(manifest).encode())
        except BaseException:
            claim.abandon()
            raise
    return claim
