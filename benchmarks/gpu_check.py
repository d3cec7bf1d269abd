"""Measurements of the GPU check (``benchmarks/gpu_check.sh`` runs the CUDA/Triton tests first).

On a CUDA device, in a few minutes:

1. every exact execution strategy of ``ShiftWiseConv2d`` (``strips``, ``fused``: small convs
   + the Triton shift-add, ``reference``) at the four SW-T stage shapes (batch ``--op-batch``),
   modes ``fwd`` (eval, training form), ``fwd_bwd`` (train mode, forward + backward) and
   ``deploy`` (re-parameterised, eval), timed interleaved with CUDA events;
2. train-step and deploy throughput of every ``*_tiny`` model (``shiftwise.list_models``) at
   224 px, batch ``--batch`` (64), in fp32 and under bf16 autocast, with peak memory
   (``torch.cuda.max_memory_allocated`` over the memory held before the call);
3. writes ``gpu_check.json`` and ``gpu_check.png`` into ``--out`` and prints the CUDA rule for
   :func:`shiftwise.layers.shiftwise_conv.resolve_strategy` that the strategy timings support.

Without a CUDA device it says so and exits 0 having measured nothing (the CPU dry run).

Run: ``python benchmarks/gpu_check.py [--out benchmarks/results/gpu] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

NO_GPU = (
    "gpu_check: no CUDA GPU detected here; nothing was measured (GPU figures not measured yet)."
)
STRATEGIES = ("strips", "fused", "reference")
OP_MODES = ("fwd", "fwd_bwd", "deploy")
PRECISIONS = ("fp32", "bf16")


def time_strategies(device: torch.device, batch: int, repeats: int) -> list[dict[str, Any]]:
    """Median/quartile times of each strategy at each SW-T stage shape and mode."""
    from shiftwise.analysis.timing import measure_interleaved
    from shiftwise.benchmarking.operators import SW_T_STAGES, operator_call
    from shiftwise.models.operators import build_operator
    from shiftwise.models.registry import SW_KWARGS

    rows = []
    for channels, size, kernel in SW_T_STAGES:
        torch.manual_seed(0)
        x = torch.randn(batch, channels, size, size, device=device)
        modules = {
            strategy: build_operator(
                "shiftwise", channels, kernel, strategy=strategy, **SW_KWARGS
            ).to(device)
            for strategy in STRATEGIES
        }
        for mode in OP_MODES:
            calls = {name: operator_call(module, x, mode) for name, module in modules.items()}
            stats = measure_interleaved(calls, device, repeats=repeats, warmup=2)
            row = {"channels": channels, "size": size, "kernel": kernel, "mode": mode}
            row["times"] = {name: stat.to_dict() for name, stat in stats.items()}
            rows.append(row)
            print(
                f"C={channels} {size}px K={kernel} {mode}: "
                + ", ".join(f"{n} {s.median * 1e3:.3f} ms" for n, s in stats.items()),
                flush=True,
            )
    return rows


def cuda_rule(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode, the strategy with the smallest geometric-mean time over the stages, and the
    per-stage winners (the rule ``resolve_strategy`` should follow on CUDA)."""
    rule: dict[str, Any] = {}
    for mode in OP_MODES:
        mode_rows = [row for row in rows if row["mode"] == mode]
        geomean = {
            name: math.exp(
                sum(math.log(row["times"][name]["median_s"]) for row in mode_rows) / len(mode_rows)
            )
            for name in STRATEGIES
        }
        winners = [
            min(row["times"], key=lambda n, row=row: row["times"][n]["median_s"])
            for row in mode_rows
        ]
        rule[mode] = {"best": min(geomean, key=geomean.get), "geomean_s": geomean}
        rule[mode]["per_stage"] = winners
    return rule


def model_throughput(
    device: torch.device, batch: int, repeats: int, image_size: int = 224
) -> dict[str, Any]:
    """img/s and peak memory of every ``*_tiny`` model, train and deploy, fp32 and bf16."""
    import shiftwise
    from shiftwise.analysis.timing import measure_interleaved, peak_memory
    from shiftwise.benchmarking.models import model_call

    names = shiftwise.list_models("*_tiny")
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    result: dict[str, Any] = {"models": names, "batch": batch, "image_size": image_size}
    for precision in PRECISIONS:
        for mode in ("train", "deploy"):
            calls = {}
            for name in names:
                model = shiftwise.create_model(name).to(device)
                calls[name] = _with_precision(model_call(model, x, mode), precision)
            stats = measure_interleaved(calls, device, repeats=repeats, warmup=2)
            entry = {}
            for name in names:
                entry[name] = {
                    "images_per_s": batch / stats[name].median,
                    "step": stats[name].to_dict(),
                    "peak_memory_bytes": peak_memory(calls[name], device),
                }
                print(
                    f"{name} {mode} {precision}: {entry[name]['images_per_s']:.1f} img/s, "
                    f"peak {entry[name]['peak_memory_bytes'] / 2**30:.2f} GiB",
                    flush=True,
                )
            result[f"{mode}_{precision}"] = entry
            del calls
            torch.cuda.empty_cache()
    return result


def _with_precision(call: Callable[[], object], precision: str) -> Callable[[], object]:
    def run() -> object:
        context = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if precision == "bf16"
            else contextlib.nullcontext()
        )
        with context:
            return call()

    return run


def plot(result: dict[str, Any], path: Path) -> None:
    """Strategy times per stage and mode (log scale), and model img/s per mode/precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(OP_MODES) + 1, figsize=(5 * (len(OP_MODES) + 1), 4))
    for ax, mode in zip(axes, OP_MODES, strict=False):
        rows = [row for row in result["strategies"] if row["mode"] == mode]
        for i, name in enumerate(STRATEGIES):
            times = [row["times"][name]["median_s"] * 1e3 for row in rows]
            ax.bar([j + 0.27 * i for j in range(len(rows))], times, 0.27, label=name)
        ax.set_xticks([j + 0.27 for j in range(len(rows))])
        ax.set_xticklabels([f"C{r['channels']} K{r['kernel']}" for r in rows])
        ax.set_yscale("log")
        ax.set_title(f"SW strategies, {mode}")
        ax.set_ylabel("ms (median)")
        ax.legend(fontsize=7)
    models = result["models"]
    keys = [key for key in models if key.startswith(("train_", "deploy_"))]
    for i, key in enumerate(keys):
        speeds = [models[key][name]["images_per_s"] for name in models["models"]]
        positions = [j + i * 0.8 / len(keys) for j in range(len(speeds))]
        axes[-1].bar(positions, speeds, 0.8 / len(keys), label=key)
    axes[-1].set_xticks(range(len(models["models"])))
    axes[-1].set_xticklabels(models["models"])
    axes[-1].set_yscale("log")
    axes[-1].set_title(f"models, {models['image_size']} px, batch {models['batch']}")
    axes[-1].set_ylabel("images / s")
    axes[-1].legend(fontsize=7)
    fig.suptitle(result["device_name"])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="model batch (default 64)")
    parser.add_argument("--op-batch", type=int, default=32, help="operator batch (default 32)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    from shiftwise.benchmarking.environment import describe_environment, write_json

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    strategies = time_strategies(device, args.op_batch, args.repeats)
    rule = cuda_rule(strategies)
    models = model_throughput(device, args.batch, args.repeats)
    result = {
        "device_name": torch.cuda.get_device_name(device),
        "strategies": strategies,
        "cuda_rule": rule,
        "models": models,
    }
    write_json(
        args.out / "gpu_check.json",
        {"environment": describe_environment(device), "result": result},
    )
    plot(result, args.out / "gpu_check.png")
    print("CUDA rule for resolve_strategy (fastest by geometric mean over the SW-T stages):")
    for mode, entry in rule.items():
        print(f"  {mode}: {entry['best']} (per stage: {', '.join(entry['per_stage'])})")
    print(f"-> {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
