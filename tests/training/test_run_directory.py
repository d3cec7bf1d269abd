"""Run directories are owned (a manifest) and locked (flock): user files are never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shiftwise import io as swio
from shiftwise.errors import UsageError
from shiftwise.training import run_directory
from shiftwise.training.run_directory import (
    LOCK_NAME,
    MANIFEST_NAME,
    RunDirectory,
    claim_run_directory,
)

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


# ---------------------------------------------------------------------------------------------
# Issue 26: links are refused, the manifest records what shiftwise wrote, failed claims undo


def test_a_symlinked_lock_or_manifest_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    for name in (LOCK_NAME, MANIFEST_NAME):
        run = tmp_path / f"run{name}"
        run.mkdir()
        (run / name).symlink_to(victim)
        with pytest.raises(UsageError, match=r"is a symbolic link; shiftwise never follows"):
            claim_run_directory(run)
        assert victim.read_bytes() == b"precious"
        assert sorted(p.name for p in run.iterdir()) == [name] and (run / name).is_symlink()


def test_a_failed_claim_leaves_a_users_empty_directory_empty(tmp_path: Path) -> None:
    claim_run_directory(tmp_path).abandon()
    assert list(tmp_path.iterdir()) == []


def _resume_point(files: RunDirectory, step: int) -> None:
    tensors = {"model": {"w": torch.full((2,), float(step))}}
    state = {"epoch": 0, "global_step": step}
    files.save_resume_point(tensors, state, model="slak_atto", model_kwargs={}, metadata={})


def test_resume_points_keep_latest_and_previous(tmp_path: Path, monkeypatch) -> None:
    files = claim_run_directory(tmp_path)
    for step in (1, 2, 3):
        _resume_point(files, step)
    latest = swio.load_training_state(tmp_path / swio.STATE_NAME)
    previous = swio.load_training_state(tmp_path / swio.PREVIOUS_NAME)
    assert (latest["global_step"], previous["global_step"]) == (3, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        MANIFEST_NAME,
        LOCK_NAME,
        "checkpoint-previous.pt",
        "checkpoint.pt",
        "weights-e0000-s00000002.safetensors",
        "weights-e0000-s00000003.safetensors",
    ]

    # a run killed between linking the previous state and writing the new one leaves both
    # names on one file; resuming from it must not leave the link's temporary file behind
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_directory, "save_training_state", killed)
    with pytest.raises(KeyboardInterrupt):
        _resume_point(files, 4)
    files.release()
    monkeypatch.undo()
    assert os.path.samefile(tmp_path / swio.STATE_NAME, tmp_path / swio.PREVIOUS_NAME)
    files = claim_run_directory(tmp_path, resuming=True)
    files.continue_from(swio.find_resumable(tmp_path))
    _resume_point(files, 5)
    assert not list(tmp_path.glob(".*.tmp"))
    assert swio.load_training_state(tmp_path / swio.PREVIOUS_NAME)["global_step"] == 3
    assert not (tmp_path / "weights-e0000-s00000004.safetensors").exists()  # orphan removed


def test_leftovers_of_interrupted_writes_are_removed_and_nothing_else(tmp_path: Path) -> None:
    files = claim_run_directory(tmp_path)
    _resume_point(files, 4)
    files.save_weights("weights-e0001-s00000005.safetensors", {"model": {"w": torch.ones(2)}})
    files.release()  # (an orphan: written, then killed before its state file)
    (tmp_path / ".checkpoint.pt.123-0123abcd.tmp").write_bytes(b"")
    (tmp_path / ".weights-e0001-s00000006.safetensors.9-ffffffff.tmp").write_bytes(b"x" * 100)
    mine = {
        ".notes.tmp": b"n",
        "weights-mine.safetensors": b"w",
        ".a.1-abcd.tmp": b"t",
        ".x.123-deadbeef.tmp": b"not a file shiftwise names",
    }
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
    claim_run_directory(tmp_path, resuming=True).release()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [LOCK_NAME, MANIFEST_NAME, "checkpoint.pt", "weights-e0000-s00000004.safetensors", *mine]
    )
    assert all((tmp_path / name).read_bytes() == data for name, data in mine.items())


def test_an_owned_directory_refuses_files_its_manifest_does_not_record(tmp_path: Path) -> None:
    files = claim_run_directory(tmp_path / "run")
    files.write("log.json", b"[]")
    files.release()
    (tmp_path / "run" / "log.json").write_bytes(b"[] ")  # changed since shiftwise wrote it
    with pytest.raises(UsageError, match=r"holds a file shiftwise did not write or that changed"):
        claim_run_directory(tmp_path / "run")
    (tmp_path / "run" / "log.json").write_bytes(b"[]")
    claim_run_directory(tmp_path / "run").release()  # unchanged again: accepted
    (tmp_path / "run" / "model.safetensors").write_bytes(b"the user's")  # not recorded
    with pytest.raises(UsageError, match=r"'model.safetensors'"):
        claim_run_directory(tmp_path / "run", resuming=True)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == b"the user's"


FORGED_MANIFESTS = {
    "first format": {"format": "shiftwise-run-1"},
    "wrong digest": {
        "format": "shiftwise-run-2",
        "files": {"log.csv": {"size": 4, "sha256": "0" * 64}},
    },
}


@pytest.mark.parametrize("manifest", FORGED_MANIFESTS.values(), ids=FORGED_MANIFESTS.keys())
def test_a_forged_manifest_does_not_adopt_a_users_files(tmp_path: Path, manifest) -> None:
    path = _user_directory(tmp_path / "mine")
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    for resuming in (False, True):
        with pytest.raises(UsageError, match=r"'log.csv'"):
            claim_run_directory(path, resuming=resuming)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


def test_a_directory_without_manifest_is_adopted_only_when_resumed_and_all_shiftwise(
    tmp_path: Path,
) -> None:
    files = claim_run_directory(tmp_path / "old")
    _resume_point(files, 1)
    files.write("log.json", b"[]")
    files.release()
    for name in (MANIFEST_NAME, LOCK_NAME):  # as an earlier shiftwise left it
        (tmp_path / "old" / name).unlink()
    with pytest.raises(UsageError, match=r"already holds a resume point"):
        claim_run_directory(tmp_path / "old")
    (tmp_path / "old" / "notes.txt").write_bytes(b"mine")
    with pytest.raises(UsageError, match=r"not a shiftwise run directory \(it holds 'notes.txt'"):
        claim_run_directory(tmp_path / "old", resuming=True)
    (tmp_path / "old" / "notes.txt").unlink()
    (tmp_path / "old" / "log.csv").write_bytes(b"a,b\n")  # shiftwise's name, not its content
    with pytest.raises(UsageError, match=r"with a name shiftwise uses .* 'log.csv'"):
        claim_run_directory(tmp_path / "old", resuming=True)
    (tmp_path / "old" / "log.csv").unlink()
    claim_run_directory(tmp_path / "old", resuming=True).release()
    manifest = json.loads((tmp_path / "old" / MANIFEST_NAME).read_text())
    assert sorted(manifest["files"]) == [
        "checkpoint.pt",
        "log.json",
        "weights-e0000-s00000001.safetensors",
    ]
