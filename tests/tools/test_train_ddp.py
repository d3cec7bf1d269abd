"""``torchrun --nproc_per_node=2`` training on CPU (gloo, SyncBatchNorm), end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shiftwise.io import load_training_state, read_weights


@pytest.mark.slow
def test_torchrun_two_processes_train_and_resume(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    output = tmp_path / "ddp"
    command = [
        torchrun, "--standalone", "--nproc_per_node=2",
        "-m", "shiftwise.cli", "train",
        "--model", "slak_atto", "--width-factor", "0.25",
        "--data", "digits", "--train-limit", "128", "--val-limit", "64",
        "--batch-size", "16", "--epochs", "1", "--mixup", "0.5",
        "--no-progress", "--output", str(output),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("top-1") == 1, "only rank 0 reports"
    assert "4 steps, batch 16 x 1 x 2" in done.stderr  # 128 images / (16 x 2 ranks)
    assert "128 train / 64 val images" in done.stderr  # --val-limit 64 of 359
    records = json.loads((output / "log.json").read_text())
    assert [r["epoch"] for r in records] == [1]
    state = load_training_state(output / "checkpoint.pt")
    assert state["epoch"] == 1 and len(state["ranks"]) == 2  # one RNG state per rank
    tensors, meta = read_weights(output / "model.safetensors")
    assert meta["model"] == "slak_atto"
    assert not any("sync" in name.lower() for name in tensors)  # plain BN keys

    resumed = [*command[:-2], "--epochs", "2", "--resume", str(output), "--allow-config-change"]
    done = subprocess.run(resumed, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads((output / "log.json").read_text())
    assert [r["epoch"] for r in records] == [1, 2]
