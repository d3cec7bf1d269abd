"""Faults a hostile user can cause, in process: bad arguments (checked before any data is read),
non-finite training, damaged checkpoints and images, an unwritable output directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

import shiftwise
from shiftwise.cli import main
from shiftwise.data import BatchTransform
from shiftwise.errors import DivergedError
from shiftwise.io import read_weights
from shiftwise.training import TrainConfig, config_from_options
from shiftwise.training import build as build_module

TINY = [
    "--model", "slak_atto", "--width-factor", "0.25", "--data", "digits",
    "--train-limit", "64", "--val-limit", "32", "--batch-size", "16", "--no-progress",
]  # fmt: skip


def _config(output: Path, **changes) -> TrainConfig:
    values = dict(
        model="slak_atto",
        width_factor=0.25,
        data="digits",
        train_limit=64,
        val_limit=32,
        batch_size=16,
        epochs=1,
        progress=False,
        output=str(output),
    )
    return config_from_options({**values, **changes})


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the trainer reads data (arguments must be checked before)."""

    def refuse(*args, **kwargs):
        raise AssertionError("data was read before the arguments were checked")

    monkeypatch.setattr(build_module, "load_data", refuse)


BAD_TRAIN_ARGS = [
    (["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    (["--epochs", "-1"], "--epochs: expected an integer >= 1, got -1"),
    (["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    (["--image-size", "7"], "--image-size: the models reduce their input 32 times, expected"),
    (["--device", "tpu9"], "--device: 'tpu9' is not a device, expected cpu, cuda or cuda:N"),
    (["--smoothing", "1.5"], "--smoothing: expected a value in [0, 1), got 1.5"),
    (["--lr", "0"], "--lr: expected a value > 0, got 0.0"),
    (["--density", "0.5"], "--density: only applies to sparse training; add --sparse"),
    (["--update-freq", "5"], "--update-freq: only applies to sparse training; add --sparse"),
    (["--max-skipped-steps", "0"], "--max-skipped-steps: expected an integer >= 1, got 0"),
    (["--max-bad-images", "1"], "--max-bad-images: expected a value in [0, 1), got 1.0"),
    (["--model", "resnet50"], "--model: unknown model 'resnet50'"),
    (["--output", "FILE/sub"], "--output: cannot write to"),
]
if not torch.cuda.is_available():
    BAD_TRAIN_ARGS.append(
        (["--device", "cuda"], "--device: 'cuda' asked for CUDA, but no CUDA device is available")
    )


@pytest.mark.parametrize(("argv", "message"), BAD_TRAIN_ARGS, ids=lambda v: str(v))
def test_bad_arguments_fail_before_data_one_line_exit_2(
    argv, message, tmp_path: Path, no_data, capsys
) -> None:
    (tmp_path / "FILE").write_bytes(b"")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    code = main(["train", *TINY, "--output", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.startswith("shiftwise train: error: ") and err.count("\n") == 1


def test_demo_rejects_zero_epochs(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--epochs", "0", "--output", str(tmp_path)]) == 2
    assert "--epochs: expected an integer >= 1, got 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_read_only_output_is_found_before_training(tmp_path: Path, no_data, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores the mode: only the path-under-a-file case
            pytest.skip("running as a user whose writes the directory mode does not block")
        assert main(["train", *TINY, "--output", str(locked / "run")]) == 2
        err = capsys.readouterr().err
        assert f"--output: cannot write to '{locked / 'run'}'" in err
    finally:
        locked.chmod(0o700)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs of slak_atto (BatchNorm) on 64 digits, EMA on: checkpoint and previous."""
    output = tmp_path_factory.mktemp("faults") / "run"
    shiftwise.train(_config(output, epochs=2, ema_decay=0.5))
    return output


def test_resume_refuses_changed_configuration_unless_allowed(
    trained: Path, tmp_path: Path, capsys
) -> None:
    before = _files(trained)
    for option, value, shown in [
        ("--batch-size", "8", "--batch-size: 16 -> 8"),
        ("--lr", "0.01", "--lr: 0.002 -> 0.01"),
        ("--image-size", "64", "--image-size: None -> 64"),
        ("--warmup-epochs", "0", "--warmup-epochs: 0.5 -> 0.0"),
    ]:
        assert main(["train", "--resume", str(trained), option, value]) == 2
        err = capsys.readouterr().err
        assert shown in err and "--allow-config-change" in err, err
    other = tmp_path / "other"  # another run's directory is not written over
    other.mkdir()
    (other / "checkpoint.pt").write_bytes((trained / "checkpoint.pt").read_bytes())
    assert main(["train", "--resume", str(trained), "--output", str(other)]) == 2
    assert "already holds a resume point" in capsys.readouterr().err
    assert _files(trained) == before


@pytest.mark.slow
def test_lr_blow_up_stops_with_exit_3_and_keeps_the_last_good_files(
    trained: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name, data in _files(trained).items():
        (run / name).write_bytes(data)
    before = _files(run)
    argv = ["train", "--resume", str(run), "--epochs", "3", "--lr", "1e9"]
    argv += ["--allow-config-change", "--max-skipped-steps", "2", "--no-progress"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("shiftwise train: error: training diverged: 2 consecutive steps")
    assert err.count("\n") == 1
    assert _files(run) == before  # checkpoints, weights and logs untouched


class _Poisoned(BatchTransform):
    """Training batches become NaN at the listed calls (1-based), e.g. a corrupt decode."""

    calls: ClassVar[set[int]] = set()
    count: ClassVar[int] = 0

    def forward(self, images, labels):
        x, targets = super().forward(images, labels)
        if self.training:
            type(self).count += 1
            if type(self).count in self.calls:
                x = torch.full_like(x, float("nan"))
        return x, targets


@pytest.mark.slow
def test_poisoned_batch_is_skipped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_module, "BatchTransform", _Poisoned)
    monkeypatch.setattr(_Poisoned, "calls", {2})
    monkeypatch.setattr(_Poisoned, "count", 0)
    result = shiftwise.train(_config(tmp_path, ema_decay=0.5))
    assert result.skipped_steps == 1
    assert json.loads((tmp_path / "log.json").read_text())[0]["skipped_steps"] == 1
    for kind in ("model", "ema"):  # weights and batch-norm statistics stayed finite
        tensors, _ = read_weights(tmp_path / "model.safetensors", kind)
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


@pytest.mark.slow
def test_poison_every_batch_diverges_without_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_module, "BatchTransform", _Poisoned)
    monkeypatch.setattr(_Poisoned, "calls", set(range(1, 100)))
    monkeypatch.setattr(_Poisoned, "count", 0)
    with pytest.raises(DivergedError, match="3 consecutive steps"):
        shiftwise.train(_config(tmp_path, max_skipped_steps=3))
    assert not list(tmp_path.glob("*.safetensors")) and not (tmp_path / "checkpoint.pt").exists()


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_damaged_checkpoints(trained: Path, tmp_path: Path, capsys, caplog) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name, data in _files(trained).items():
        (run / name).write_bytes(data)
    _flip(run / "checkpoint.pt", (run / "checkpoint.pt").stat().st_size // 2)
    # the file itself: one line naming it
    assert main(["train", "--resume", str(run / "checkpoint.pt")]) == 2
    err = capsys.readouterr().err
    assert f"--resume: '{run / 'checkpoint.pt'}' is " in err and err.count("\n") == 1
    # the run directory: the previous resume point verifies and is used (and said so)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "resuming from the previous resume point" in caplog.text
    assert "checkpoint-previous.pt" in caplog.text
    # eval on a damaged / truncated weights file names --checkpoint and the file
    weights = run / "model.safetensors"
    _flip(weights, weights.stat().st_size - 3)
    assert main(["eval", "--checkpoint", str(weights), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint: '{weights}' is damaged" in err and err.count("\n") == 1
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["eval", "--checkpoint", str(weights), "--data", "digits"]) == 2
    assert "is not a readable safetensors file" in capsys.readouterr().err
    # both state files damaged: nothing to resume
    for name in ("checkpoint.pt", "checkpoint-previous.pt"):
        (run / name).write_bytes((run / name).read_bytes()[:500])
    assert main(["train", "--resume", str(run)]) == 2
    assert f"--resume: no resume point in '{run}' verifies" in capsys.readouterr().err


def _image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("val", 8)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    good = root / "train" / "a" / "0.png"
    jpeg = root / "train" / "a" / "truncated.jpg"
    Image.open(good).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    (root / "train" / "b" / "notes.jpg").write_text("not an image")


@pytest.mark.slow
def test_unreadable_images_are_skipped_named_and_limited(tmp_path: Path, caplog, capsys) -> None:
    data = tmp_path / "data"
    _image_folder(data)
    argv = ["train", "--model", "convnext_atto", "--width-factor", "0.25", "--data", str(data)]
    argv += ["--image-size", "32", "--batch-size", "10", "--epochs", "1", "--workers", "0"]
    argv += ["--no-progress"]
    assert main([*argv, "--output", str(tmp_path / "ok"), "--max-bad-images", "0.1"]) == 0
    assert "truncated.jpg" in caplog.text and "notes.jpg" in caplog.text
    record = json.loads((tmp_path / "ok" / "log.json").read_text())[0]
    assert record["bad_images"] >= 1  # those of the 50 images the 5 steps drew
    assert main([*argv, "--output", str(tmp_path / "strict"), "--max-bad-images", "0"]) == 2
    err = capsys.readouterr().err
    assert "could not be read this epoch (more than --max-bad-images 0)" in err
    assert err.count("\n") == 1
