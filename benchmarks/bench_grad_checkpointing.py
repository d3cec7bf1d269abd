"""Training memory of SW-T with and without activation checkpointing (``set_grad_checkpointing``).

One training step (forward, loss, backward; train mode, float32, 224x224 by default) of
``sw_tiny`` is run in a fresh process per (batch, mode), since a process's peak resident memory
only grows. CPU tensors have no allocator statistics, so memory is read from the process: glibc
is told to serve every block above 64 KiB by ``mmap`` (returned on free), so that resident
memory follows the live tensors, and a warm-up step at 32 px first loads the code paths
(``torch.utils.checkpoint`` alone pulls in ~150 MiB of library code on its first call).
Reported per run:

- ``step_peak_mb``: peak resident memory during the step minus the resident memory just before
  it (model and input ready, no gradients yet): what the step itself needs (activations kept for
  backward, parameter gradients, recomputation and workspace);
- ``saved_mb``: what autograd keeps for backward after the forward (``saved_tensors_hooks``;
  distinct storages, parameters excluded): the activations checkpointing removes;
- ``step_s``: wall time of the step (checkpointing recomputes every block's forward once).

Writes ``benchmarks/results/grad_checkpointing.json`` and ``.png``.
Run: ``python benchmarks/bench_grad_checkpointing.py [--batches 2 4] [--img-size 224]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from shiftwise.benchmarking.environment import describe_environment, write_json
from shiftwise.models import create_model

RESULTS = Path(__file__).parent / "results"
MODEL = "sw_tiny"


def resident_mb() -> float:
    """Current resident memory of this process in MiB (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_resident_mb() -> float:
    """Peak resident memory of this process so far in MiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_step(batch: int, img_size: int, checkpointing: bool) -> dict[str, float]:
    """Run one training step in this process and measure it (see the module docstring)."""
    torch.manual_seed(0)
    model = create_model(MODEL, drop_path_rate=0.1).train()
    model.set_grad_checkpointing(checkpointing)
    x = torch.randn(batch, 3, img_size, img_size)
    target = torch.randint(0, 1000, (batch,))
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    warm_up = torch.randn(batch, 3, 32, 32)
    torch.nn.functional.cross_entropy(model(warm_up), target).backward()
    model.zero_grad(set_to_none=True)
    before = resident_mb()
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    seconds = time.perf_counter() - start
    return {
        "baseline_mb": before,
        "peak_mb": peak_resident_mb(),
        "step_peak_mb": peak_resident_mb() - before,
        "saved_mb": sum(saved.values()) / 2**20,
        "step_s": seconds,
    }


def measure(batch: int, img_size: int, checkpointing: bool, threads: int) -> dict[str, float]:
    """:func:`one_step` in a fresh Python process."""
    command = [
        sys.executable, __file__, "--worker", "--batches", str(batch), "--img-size",
        str(img_size), "--threads", str(threads),
    ] + (["--checkpointing"] if checkpointing else [])  # fmt: skip
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], path: Path) -> None:
    batches = sorted({row["batch"] for row in rows})
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.38
    for offset, mode, color in ((-width / 2, False, "tab:gray"), (width / 2, True, "tab:blue")):
        values = [
            next(r["step_peak_mb"] for r in rows if r["batch"] == b and r["checkpointing"] == mode)
            for b in batches
        ]
        bars = ax.bar(
            [i + offset for i in range(len(batches))], values, width, color=color,
            label="set_grad_checkpointing(True)" if mode else "no checkpointing",
        )  # fmt: skip
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("training-step peak memory (MiB)")
    ax.set_title(f"{MODEL} training step, {rows[0]['img_size']} px, CPU float32")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(one_step(args.batches[0], args.img_size, args.checkpointing)))
        return
    rows = []
    for batch in args.batches:
        for checkpointing in (False, True):
            row = measure(batch, args.img_size, checkpointing, args.threads)
            row.update(batch=batch, img_size=args.img_size, checkpointing=checkpointing)
            rows.append(row)
            print(json.dumps(row))
    ratios = {
        str(batch): next(r for r in rows if r["batch"] == batch and r["checkpointing"])[
            "step_peak_mb"
        ]
        / next(r for r in rows if r["batch"] == batch and not r["checkpointing"])["step_peak_mb"]
        for batch in args.batches
    }
    print("checkpointed / plain step peak:", {k: round(v, 3) for k, v in ratios.items()})
    RESULTS.mkdir(exist_ok=True)
    write_json(
        RESULTS / "grad_checkpointing.json",
        {
            "environment": describe_environment(torch.device("cpu")),
            "model": MODEL,
            "rows": rows,
            "ratio": ratios,
        },
    )
    plot(rows, RESULTS / "grad_checkpointing.png")


if __name__ == "__main__":
    main()
