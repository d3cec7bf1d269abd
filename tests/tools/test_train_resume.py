"""Kill a training run mid-epoch (SIGKILL), resume it, and get bit-identical final weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shiftwise.tools.checkpoint import load_checkpoint, load_weights

# Tiny ConvNeXt on 256 digits, 16 steps per epoch, 3 epochs, with every source of training
# randomness switched on: mixup, random erasing, drop path, dropout-free label smoothing.
ARGS = [
    "train",
    "--model", "convnext_atto",
    "--width-factor", "0.25",
    "--data", "digits",
    "--train-limit", "256",
    "--val-limit", "64",
    "--batch-size", "16",
    "--epochs", "3",
    "--mixup", "0.5",
    "--reprob", "0.5",
    "--drop-path", "0.1",
    "--ema-decay", "0.9",
    "--seed", "7",
    "--no-progress",
]  # fmt: skip


def _command(output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "shiftwise.cli", *ARGS, "--output", str(output), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_command(full), check=True, env=_env(), capture_output=True)

    process = subprocess.Popen(
        _command(killed, "--checkpoint-every", "5"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_file = killed / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not state_file.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    state = load_checkpoint(state_file)
    assert state["step_in_epoch"] > 0, "expected a mid-epoch checkpoint"
    assert not (killed / "model.safetensors").exists()

    subprocess.run(
        _command(killed, "--checkpoint-every", "5", "--resume", str(state_file)),
        check=True,
        env=_env(),
        capture_output=True,
    )
    expected, _ = load_weights(full / "model.safetensors")
    resumed, _ = load_weights(killed / "model.safetensors")
    assert expected.keys() == resumed.keys() == {"model", "ema"}
    for group in expected:
        assert expected[group].keys() == resumed[group].keys()
        for name, tensor in expected[group].items():
            assert torch.equal(tensor, resumed[group][name]), f"{group}.{name} differs"
