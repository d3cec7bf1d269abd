"""Run directories are owned (a manifest) and locked (flock): user files are never touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shiftwise.errors import UsageError
from shiftwise.training.run_directory import LOCK_NAME, MANIFEST_NAME, claim_run_directory

USER_FILES = {"weights-mine.safetensors": b"mine", ".notes.tmp": b"notes", "log.csv": b"a,b\n"}


def _user_directory(path: Path) -> Path:
    path.mkdir()
    for name, data in USER_FILES.items():
        (path / name).write_bytes(data)
    return path


def test_new_and_empty_directories_are_claimed_and_marked(tmp_path: Path) -> None:
    for path in (tmp_path / "new" / "run", tmp_path / "empty"):
        if path.name == "empty":
            path.mkdir()
        claim = claim_run_directory(path)
        assert sorted(p.name for p in path.iterdir()) == sorted([MANIFEST_NAME, LOCK_NAME])
        claim.release()
        claim_run_directory(path).release()  # owned now: claimed again


def test_a_directory_of_user_files_is_refused_untouched(tmp_path: Path) -> None:
    path = _user_directory(tmp_path / "mine")
    for resuming in (False, True):
        with pytest.raises(UsageError, match=r"output: .* is not empty and not a shiftwise run"):
            claim_run_directory(path, resuming=resuming)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == USER_FILES


def test_a_held_directory_is_refused_naming_the_holder(tmp_path: Path) -> None:
    held = claim_run_directory(tmp_path / "run")
    with pytest.raises(UsageError, match=rf"in use by another shiftwise run \(PID {os.getpid()}\)"):
        claim_run_directory(tmp_path / "run")
    held.release()
    claim_run_directory(tmp_path / "run").release()


def test_the_lock_of_a_killed_holder_is_dropped(tmp_path: Path) -> None:
    """SIGKILL runs no cleanup: the kernel drops the flock, the stale lock file is harmless."""
    code = (
        "import sys, time; from shiftwise.training.run_directory import claim_run_directory; "
        "claim_run_directory(sys.argv[1]); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=rf"\(PID {holder.pid}\)"):
            claim_run_directory(tmp_path / "run")
    finally:
        holder.kill()
        holder.wait()
    claim_run_directory(tmp_path / "run").release()


def test_abandon_removes_only_what_the_claim_created(tmp_path: Path) -> None:
    claim_run_directory(tmp_path / "fresh").abandon()
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "kept").mkdir()
    claim_run_directory(tmp_path / "kept").abandon()
    assert (tmp_path / "kept").is_dir()
