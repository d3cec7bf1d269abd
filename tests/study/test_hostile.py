"""Hostile inputs to ``shiftwise study`` (issue 26): each is one line and exit code 2, or the
right behaviour, never a traceback, a hang or a user's file touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shiftwise.cli import main
from shiftwise.study.runner import RESULT_NAME, STUDY_NAME

TINY = """seeds = [0]
[defaults]
data = "digits"
width_factor = 0.25
train_limit = 16
val_limit = 16
batch_size = 16
epochs = 1
[[runs]]
name = "tiny"
model = "convnext_atto"
"""


def _grid(tmp_path: Path, text: str = TINY, name: str = "tiny.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _study(grid: str, output: Path, *extra: str) -> int:
    return main(["study", grid, "--output", str(output), "--no-progress", *extra])


def _one_line_exit_2(capsys, code: int, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[str, Path]:
    """A tiny grid and a study directory with its one run finished (copied per test)."""
    root = tmp_path_factory.mktemp("finished")
    grid = _grid(root)
    assert _study(grid, root / "study") == 0
    return grid, root / "study"


def _copy(finished: tuple[str, Path], tmp_path: Path) -> tuple[str, Path, Path]:
    grid, source = finished
    output = tmp_path / "study"
    shutil.copytree(source, output)
    (record,) = output.glob(f"runs/*/{RESULT_NAME}")
    return grid, output, record


def _flip(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda t: _flip(t, "{", "["), "not JSON"),  # a flipped bit breaks the syntax
        (lambda t: _flip(t, '"top1": ', '"top1": 1'), "sha256"),  # a flipped digit
        (lambda t: "[]", "JSON list"),
        (lambda t: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_damaged_run_record_is_refused(finished, tmp_path, capsys, damage, reason) -> None:
    grid, output, record = _copy(finished, tmp_path)
    record.write_text(damage(record.read_text()))
    before = record.read_bytes()
    capsys.readouterr()
    _one_line_exit_2(capsys, _study(grid, output), RESULT_NAME, reason)
    assert record.read_bytes() == before  # never trained over, never deleted


def test_forged_run_record_with_a_valid_digest_is_refused(finished, tmp_path, capsys) -> None:
    from shiftwise.study.store import record_bytes

    grid, output, record = _copy(finished, tmp_path)
    forged = json.loads(record.read_text())
    forged["top1"] = 150.0  # a forger who recomputes the digest still needs valid values
    record.write_bytes(record_bytes(forged))
    capsys.readouterr()
    _one_line_exit_2(capsys, _study(grid, output), "field 'top1'")
    forged["top1"], forged["config"]["optim.lr"] = 99.0, 1.0  # another run's options
    record.write_bytes(record_bytes(forged))
    _one_line_exit_2(capsys, _study(grid, output), "another run's options")


@pytest.mark.parametrize(
    "content", ["x" + "{}", "[" * 100_000 + "]" * 100_000], ids=["flipped", "deep"]
)
def test_damaged_study_json_is_refused(finished, tmp_path, capsys, content) -> None:
    grid, output, _ = _copy(finished, tmp_path)
    (output / STUDY_NAME).write_text(content)
    capsys.readouterr()
    _one_line_exit_2(capsys, _study(grid, output), STUDY_NAME, "damaged")


def test_output_that_is_a_file_or_under_one_is_refused(tmp_path, capsys) -> None:
    grid = _grid(tmp_path)
    regular = tmp_path / "file.txt"
    regular.write_text("mine")
    _one_line_exit_2(capsys, _study(grid, regular), "output:", "not a directory")
    _one_line_exit_2(capsys, _study(grid, regular / "sub"), "output:")
    _one_line_exit_2(capsys, _study(grid, tmp_path / "ok", "--store", str(regular)), "store:")
    assert regular.read_text() == "mine"


def test_lock_that_is_a_fifo_is_refused_without_hanging(tmp_path) -> None:
    output = tmp_path / "study"
    output.mkdir()
    os.mkfifo(output / ".study.lock")
    command = [sys.executable, "-m", "shiftwise.cli", "study", _grid(tmp_path), "--output",
               str(output), "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    assert "lock" in done.stderr and "Traceback" not in done.stderr


def test_lock_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path, capsys) -> None:
    output = tmp_path / "study"
    output.mkdir()
    (output / ".study.lock").symlink_to(tmp_path / "victim.txt")
    _one_line_exit_2(capsys, _study(_grid(tmp_path), output), "lock")
    assert not (tmp_path / "victim.txt").exists()


def test_empty_axis_is_refused(tmp_path, capsys) -> None:
    grid = _grid(tmp_path, TINY.replace('model = "convnext_atto"', "model = []"))
    _one_line_exit_2(capsys, _study(grid, tmp_path / "out"), "entry 'tiny'", "model: an empty")


def test_deeply_nested_grid_is_refused(tmp_path, capsys) -> None:
    grid = _grid(tmp_path, TINY + "lr = " + "[" * 100_000 + "]" * 100_000 + "\n")
    _one_line_exit_2(capsys, _study(grid, tmp_path / "out"), "nested too deeply")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[runs]]\nname = "gpu"\nmodel = "convnext_atto"\ndevice = "cuda:99"\n', "entry 'gpu'"),
        ('[[runs]]\nname = "late"\nmodel = "convnext_atto"\nseeds = [0, 9223372036854775808]\n',
         "seeds: expected distinct integers 0 to 2**63-1"),
    ],
)  # fmt: skip
def test_bad_later_entry_refused_before_anything_trains(tmp_path, capsys, extra, message):
    grid = _grid(tmp_path, TINY + extra)
    _one_line_exit_2(capsys, _study(grid, tmp_path / "out"), message)
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.parametrize(
    "kwargs", ["{ depths = [100000, 1, 1, 1] }", "{ operator_kwargs = { n_paths = 100000 } }"]
)
def test_dry_run_with_a_huge_model_is_refused_quickly(tmp_path, capsys, kwargs) -> None:
    grid = _grid(tmp_path, TINY.replace('"convnext_atto"', f'"sw_atto"\nmodel_kwargs = {kwargs}'))
    started = time.perf_counter()
    code = main(["study", grid, "--dry-run"])
    _one_line_exit_2(capsys, code, "model_kwargs", "more than 10000 layers")
    assert time.perf_counter() - started < 60


def test_store_holding_files_shiftwise_did_not_write_is_refused(tmp_path, capsys) -> None:
    store = tmp_path / "mine"
    store.mkdir()
    (store / "notes.txt").write_text("mine")
    code = _study(_grid(tmp_path), tmp_path / "out", "--store", str(store))
    _one_line_exit_2(capsys, code, "store:", "not a shiftwise run store")
    assert [p.name for p in store.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "out").exists()
