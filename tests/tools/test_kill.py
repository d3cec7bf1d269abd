"""SIGKILL a training run at random moments, of training and of checkpoint writing; every time
the latest checkpoint loads, resuming ends bit-identical to an uninterrupted run (weights, EMA
and logged metrics), and no temporary or orphaned file is left.

``SHIFTWISE_FAULT_TRIES`` (default 1) sets the tries per scenario (each a fresh run killed,
its resumption killed again when it does not finish first, then resumed to the end); the
counts are printed. The kill moments are drawn from a seed that is printed (shown with a
failure) and that ``SHIFTWISE_FAULT_SEED`` sets: with it, a failing "checkpoint-writing"
scenario repeats its kills at the same commit steps ("training" kills are timed, so they land
near the same moments).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shiftwise.io import PREVIOUS_NAME, STATE_NAME, load_training_state, read_weights

# Tiny ConvNeXt on 64 digits, 4 steps per epoch, 2 epochs, a checkpoint after every step, with
# every source of training randomness on: mixup, random erasing, drop path, EMA.
ARGS = [
    "train",
    "--model", "convnext_atto", "--width-factor", "0.25",
    "--data", "digits", "--train-limit", "64", "--val-limit", "32",
    "--batch-size", "16", "--epochs", "2",
    "--mixup", "0.5", "--reprob", "0.5", "--drop-path", "0.1", "--ema-decay", "0.9",
    "--seed", "7", "--resume-point-every", "1", "--no-progress",
]  # fmt: skip

# Runs the command line, SIGKILLing itself at the N-th file-system commit step (fsync of a
# file or directory, os.replace, os.link); at an fsync the file is first cut to half its size,
# as a torn write would leave it. N = 0: never; the number of steps is printed at exit.
KILLER = r"""
import atexit, os, signal, sys
target, count = int(sys.argv[1]), 0
def hook(name):
    real = getattr(os, name)
    def call(*args, **kwargs):
        global count
        count += 1
        if count == target:
            if name == "fsync":
                try:
                    os.ftruncate(args[0], os.fstat(args[0]).st_size // 2)
                except OSError:
                    pass
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    setattr(os, name, call)
for name in ("fsync", "replace", "link"):
    hook(name)
atexit.register(lambda: print(f"commit-steps={count}", file=sys.stderr))
from shiftwise.cli import main
sys.exit(main(sys.argv[2:]))
"""

TRIES = int(os.environ.get("SHIFTWISE_FAULT_TRIES", "1"))
SEED_VARIABLE = "SHIFTWISE_FAULT_SEED"


def _fault_seed() -> int:
    """The seed of the kill moments: ``SHIFTWISE_FAULT_SEED``, or a fresh random one."""
    given = os.environ.get(SEED_VARIABLE)
    return int(given) if given else random.SystemRandom().randrange(2**32)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _command(output: Path, target: int) -> list[str]:
    resume = []
    if (output / STATE_NAME).exists() or (output / PREVIOUS_NAME).exists():
        resume = ["--resume", str(output)]
    return [sys.executable, "-c", KILLER, str(target), *ARGS, "--output", str(output), *resume]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, float]:
    """The uninterrupted run: its directory, its commit steps and its wall time."""
    output = tmp_path_factory.mktemp("kill") / "reference"
    started = time.monotonic()
    done = subprocess.run(_command(output, 0), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = int(done.stderr.rsplit("commit-steps=", 1)[1].split()[0])
    return output, steps, time.monotonic() - started


def _check_consistent(output: Path) -> None:
    """Whenever a checkpoint exists, the latest one is complete and verifies."""
    if (output / STATE_NAME).exists():
        load_training_state(output / STATE_NAME)


def _check_finished(output: Path, reference: Path) -> None:
    for kind in ("model", "ema"):
        expected, _ = read_weights(reference / "model.safetensors", kind)
        got, _ = read_weights(output / "model.safetensors", kind)
        assert expected.keys() == got.keys()
        for name, tensor in expected.items():
            assert torch.equal(tensor, got[name]), f"{kind} {name} differs"

    def records(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "time"} for r in json.loads(path.read_text())]

    assert records(output / "log.json") == records(reference / "log.json")
    assert not list(output.glob(".*.tmp")), "temporary files left"
    referenced = set()
    for name in (STATE_NAME, PREVIOUS_NAME):
        state = load_training_state(output / name)
        referenced |= {entry["file"] for entry in state["weights"].values()}
    assert {p.name for p in output.glob("weights-*.safetensors")} == referenced


def _start(output: Path, target: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        _command(output, target),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after(process: subprocess.Popen, seconds: float) -> int:
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        return process.wait()


def _try(output: Path, moment: str, steps: int, seconds: float, rng: random.Random) -> int:
    """A fresh run killed at a random moment, its resumption killed at a random later moment
    (it may finish first), then resumed to the end; returns the kills that landed."""
    landed = 0
    fraction = 1.0
    for _ in range(2):
        if moment == "training":
            delay = rng.uniform(0.25, 0.95) * seconds * fraction
            process = _start(output)
            code = _kill_after(process, delay)
            fraction = max(0.3, fraction - delay / seconds)
        else:
            target = rng.randint(1, max(1, int(steps * fraction)))
            process = _start(output, target)
            code = process.wait()
            fraction = max(0.1, fraction - target / steps)
        if code == 0:
            return landed
        assert code == -signal.SIGKILL, process.stderr.read()[-2000:]
        landed += 1
        _check_consistent(output)
    done = subprocess.run(_command(output, 0), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return landed


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["training", "checkpoint-writing"])
def test_sigkill_then_resume_is_bit_identical(reference, moment: str, tmp_path: Path) -> None:
    ref_dir, steps, seconds = reference
    seed = _fault_seed()
    print(
        f"\nSIGKILL during {moment}: kill moments from seed {seed} (rerun: {SEED_VARIABLE}={seed})"
    )
    rng = random.Random(f"{moment}-{seed}")
    kills = 0
    for attempt in range(TRIES):
        output = tmp_path / f"try{attempt}"
        kills += _try(output, moment, steps, seconds, rng)
        _check_finished(output, ref_dir)
    print(f"SIGKILL during {moment}: {TRIES} tries, {kills} kills, 0 failures (seed {seed})")
