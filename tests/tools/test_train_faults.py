"""Faults a hostile user can cause, in process: bad arguments (checked before any data is read),
non-finite training, damaged checkpoints and images, an unwritable output directory."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

import shiftwise
from shiftwise import io as swio
from shiftwise.cli import main
from shiftwise.data import BatchTransform
from shiftwise.errors import DivergedError
from shiftwise.io import read_weights
from shiftwise.training import TrainConfig, config_from_options
from shiftwise.training import trainer as trainer_module
from shiftwise.training.run_directory import LOCK_NAME, MANIFEST_NAME, claim_run_directory

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

    monkeypatch.setattr(trainer_module, "load_data", refuse)


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
    (["--seed", "99999999999999999999999"], "--seed: expected a value in [0, 9223372036854775807]"),
    (["--width-factor", "1e-9"], "--width-factor: slak_atto needs a width factor >="),
    (["--lr", "inf"], "--lr: expected a finite value > 0, got inf"),
    (["--min-lr", "0.1", "--lr", "0.01"], "--min-lr: expected a value <= the learning rate 0.01"),
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
    assert err.count("\n") == 1 and "checkpoint.pt' is untouched" in err
    after = _files(run)
    after.pop(LOCK_NAME), before.pop(LOCK_NAME)  # the PID of the last holder
    assert after == before  # checkpoints, weights and logs untouched


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
    monkeypatch.setattr(trainer_module, "BatchTransform", _Poisoned)
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
    monkeypatch.setattr(trainer_module, "BatchTransform", _Poisoned)
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
    # the run directory: the previous checkpoint verifies and is used (and said so)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "resuming from the previous checkpoint" in caplog.text
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
    assert f"--resume: no checkpoint in '{run}' verifies" in capsys.readouterr().err


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
    assert not (tmp_path / "strict").exists()  # nothing was written: the claim is undone


# ---------------------------------------------------------------------------------------------
# Issue 18: the run directory is owned and locked; divergence, full disks and FIFOs


USER_FILES = {"weights-mine.safetensors": b"mine", ".notes.tmp": b"notes", "log.csv": b"a,b\n"}


def test_training_into_a_directory_of_user_files_is_refused_byte_identical(
    tmp_path: Path, no_data, capsys
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, data in USER_FILES.items():
        (mine / name).write_bytes(data)
    assert main(["train", *TINY, "--output", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "is not empty and not a shiftwise run directory" in err and err.count("\n") == 1
    assert _files(mine) == USER_FILES


def test_a_second_run_on_the_same_directory_is_refused_naming_the_first(
    tmp_path: Path, no_data, capsys
) -> None:
    first = claim_run_directory(tmp_path / "run")  # as a concurrent `train` holds it
    try:
        before = _files(tmp_path / "run")
        assert main(["train", *TINY, "--output", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another shiftwise run (PID {os.getpid()})" in err
        assert err.count("\n") == 1 and _files(tmp_path / "run") == before
    finally:
        first.release()


def test_a_usage_error_after_the_claim_leaves_no_directory(tmp_path: Path, capsys) -> None:
    output = tmp_path / "new"
    argv = ["train", "--data", str(tmp_path / "no-such-data"), "--output", str(output)]
    assert main(argv) == 2
    assert "--data: expected one of" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.slow
def test_resume_keeps_every_option_that_shapes_logs_and_writes(tmp_path: Path) -> None:
    options = dict(val_limit=24, resume_point_every=3, max_skipped_steps=7, max_bad_images=0.2)
    shiftwise.train(_config(tmp_path, **options))
    run = trainer_module.Trainer(config_from_options({"resume": str(tmp_path), "progress": False}))
    try:
        config = run.config
        resumed = (config.data.val_limit, config.run.resume_point_every)
        resumed += (config.run.max_skipped_steps, config.data.max_bad_images)
        assert resumed == (24, 3, 7, 0.2)
        assert run.val_count == 24
    finally:
        run.files.release()


@pytest.mark.slow
def test_a_run_that_ends_diverged_exits_3_without_model_weights(tmp_path: Path, capsys) -> None:
    """Fewer steps than --max-skipped-steps: the run used to exit 0 with NaN validation."""
    argv = ["train", *TINY, "--epochs", "1", "--lr", "1e9", "--output", str(tmp_path)]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("shiftwise train: error: training diverged:") and err.count("\n") == 1
    assert "not saved as model.safetensors" in err
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "model-ema.safetensors").exists()
    if (tmp_path / "model-diverged.safetensors").exists():
        assert "model-diverged.safetensors" in err


def _enospc(*args) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.slow
def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The writer's OSError (ENOSPC, simulated at fsync) during the second epoch's checkpoint."""
    append = trainer_module.TrainLog.append

    def append_then_fill_the_disk(log, record):
        append(log, record)
        if record["epoch"] == 2:
            monkeypatch.setattr(swio.os, "fsync", _enospc)

    monkeypatch.setattr(trainer_module.TrainLog, "append", append_then_fill_the_disk)
    first = None

    def remember_first_checkpoint(run, epoch, step):
        nonlocal first
        path = checkpoint(run, epoch, step)
        first = first or _files(tmp_path)
        return path

    checkpoint = trainer_module.Trainer.save_resume_point
    monkeypatch.setattr(trainer_module.Trainer, "save_resume_point", remember_first_checkpoint)
    assert main(["train", *TINY, "--epochs", "2", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert f"the last resume point '{tmp_path / 'checkpoint.pt'}' is untouched" in err
    after = _files(tmp_path)
    checkpoint_files = [n for n in first if n.startswith(("checkpoint", "weights-"))]
    assert {n: after.get(n) for n in checkpoint_files} == {n: first[n] for n in checkpoint_files}
    assert not [n for n in after if n.endswith(".tmp") or n not in first]  # nothing partial
    swio.find_resumable(tmp_path)  # verifies


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    return done.returncode == 0


@pytest.mark.slow
def test_a_real_full_disk_is_one_line_and_leaves_nothing_partial(tmp_path: Path, capsys) -> None:
    """A 96 KiB tmpfs (where the test may mount one): the first checkpoint does not fit."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "96k"):
        pytest.skip("cannot mount a tmpfs here (the simulated ENOSPC test covers the writer)")
    try:
        assert main(["train", *TINY, "--output", str(disk / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "No space left on device" in err
        left = sorted(p.name for p in (disk / "run").iterdir())
        assert not [n for n in left if n.endswith(".tmp") or n.startswith("weights-")], left
        assert "checkpoint.pt" not in left and "model.safetensors" not in left
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.fixture
def fifo(tmp_path: Path):
    """A factory of FIFOs; the test fails (instead of hanging) if one is ever opened."""

    def make(path: Path) -> Path:
        os.mkfifo(path)
        return path

    def hung(signum, frame):
        raise AssertionError("a reader opened a FIFO and blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    yield make
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_fifos_are_refused_on_every_read_path(tmp_path: Path, fifo, capsys) -> None:
    weights = fifo(tmp_path / "x.safetensors")
    assert main(["eval", "--checkpoint", str(weights), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint: '{weights}' is a FIFO, expected a regular file" in err
    run = tmp_path / "run"
    run.mkdir()
    fifo(run / "checkpoint.pt")
    assert main(["train", "--resume", str(run)]) == 2
    assert "is a FIFO, expected a regular file" in capsys.readouterr().err
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    fifo(pictures / "a.png")
    argv = ["erf", "--models", "convnext_atto", "--images", str(pictures)]
    assert main([*argv, "--out", str(tmp_path / "erf")]) == 2
    assert "--images: " in (err := capsys.readouterr().err) and "is a FIFO" in err
    data = tmp_path / "data"
    _image_folder(data)
    fifo(data / "train" / "a" / "pipe.png")
    argv = ["train", "--model", "convnext_atto", "--data", str(data), "--image-size", "32"]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pipe.png' is not a regular file" in err and err.count("\n") == 1


def test_an_empty_class_folder_is_refused(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    _image_folder(data)
    (data / "train" / "empty").mkdir()
    (data / "val" / "empty").mkdir()
    argv = ["train", "--model", "convnext_atto", "--data", str(data), "--image-size", "32"]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"class folder '{data / 'train' / 'empty'}' holds no images" in err


# ---------------------------------------------------------------------------------------------
# Issue 26: links, directories shiftwise did not write, and claims that fail


def test_a_symlinked_lock_file_is_refused_and_its_target_kept(
    tmp_path: Path, no_data, capsys
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to("../victim.txt")
    assert main(["train", *TINY, "--output", str(run)]) == 2
    err = capsys.readouterr().err
    assert "is a symbolic link; shiftwise never follows a link" in err and err.count("\n") == 1
    assert victim.read_bytes() == b"precious"
    assert [p.name for p in run.iterdir()] == [LOCK_NAME]


def _user_folder_with_a_resume_point(trained: Path, folder: Path, **user: bytes) -> Path:
    """``folder``: the user's files plus a copy of ``trained``'s resume point."""
    folder.mkdir()
    state = swio.load_training_state(trained / swio.STATE_NAME)
    for name in [swio.STATE_NAME, *(entry["file"] for entry in state["weights"].values())]:
        (folder / name).write_bytes((trained / name).read_bytes())
    for name, data in user.items():
        (folder / name).write_bytes(data)
    return folder


def test_resume_refuses_a_folder_shiftwise_did_not_write(
    trained: Path, tmp_path: Path, no_data, capsys
) -> None:
    user = {"log.csv": b"mine\n", "model.safetensors": b"mine"}
    cases = {
        "user files": ({**user, ".x.123-deadbeef.tmp": b"t"}, "not a shiftwise run directory"),
        "shiftwise names only": (user, "a name shiftwise uses that shiftwise did not write"),
    }
    for case, (files, message) in cases.items():
        folder = _user_folder_with_a_resume_point(trained, tmp_path / case, **files)
        before = _files(folder)
        assert main(["train", "--resume", str(folder), "--no-progress"]) == 2, case
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert _files(folder) == before


@pytest.mark.slow
def test_resume_adopts_a_run_directory_of_an_earlier_shiftwise(
    trained: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    for name in (MANIFEST_NAME, LOCK_NAME):
        (old / name).unlink()
    assert main(["train", "--resume", str(old), "--no-progress"]) == 0  # finished: evaluated
    manifest = json.loads((old / MANIFEST_NAME).read_text())
    assert {"checkpoint.pt", "log.json", "model.safetensors"} <= set(manifest["files"])


def test_a_forged_manifest_does_not_let_train_overwrite_a_users_files(
    tmp_path: Path, no_data, capsys
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, data in USER_FILES.items():
        (mine / name).write_bytes(data)
    (mine / MANIFEST_NAME).write_text('{"format": "shiftwise-run-1"}')
    before = _files(mine)
    assert main(["train", *TINY, "--output", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "'log.csv'" in err and err.count("\n") == 1
    assert _files(mine) == before


def test_a_finished_run_without_its_checkpoint_is_not_overwritten(
    trained: Path, tmp_path: Path, no_data, capsys
) -> None:
    run = tmp_path / "finished"
    shutil.copytree(trained, run)
    for name in (swio.STATE_NAME, swio.PREVIOUS_NAME):
        (run / name).unlink()
    before = _files(run)
    assert main(["train", *TINY, "--output", str(run)]) == 2
    err = capsys.readouterr().err
    assert "already holds a resume point or the weights of a run ('model.safetensors')" in err
    assert _files(run) == before


def test_errors_after_the_claim_leave_a_users_empty_directory_empty(tmp_path: Path, capsys) -> None:
    empty_data = tmp_path / "empty-data"
    empty_data.mkdir()
    for error, message in [
        (["--batch-size", "4096"], "cannot fill one step"),  # a usage error
        (["--data", str(empty_data)], "must hold train/<class>"),  # a data error
    ]:
        output = tmp_path / "mine"
        output.mkdir()
        assert main(["train", *TINY, "--output", str(output), *error]) == 2
        assert message in capsys.readouterr().err
        assert list(output.iterdir()) == []
        output.rmdir()
