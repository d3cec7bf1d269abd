"""The figures of issue 14's targets table, measured side by side in one run.

Rows (ratios are medians of per-repeat paired ratios with their quartiles, see
:func:`shiftwise.tools.benchmarking.timing.paired_ratio`; > 1 means SW-T is faster / larger):

* deploy throughput at 224 px, batch 1 and 8, SW-T / ConvNeXt-T and SW-T / SLaK-T, in PyTorch
  (``shiftwise.reparameterize``-d deploy forms, channels-last, no grad) and in onnxruntime (the
  deploy forms exported by ``shiftwise.tools.export.export_onnx``, one file per model serving
  both batch sizes, ``ORT_ENABLE_ALL``, ``--threads`` intra-op threads). For each batch the six
  variants (3 models x 2 runtimes) are timed interleaved;
* training step time (forward, cross-entropy, backward, AdamW step) at 128 px, batch 8,
  SW-T / ConvNeXt-T, interleaved (reported as a throughput ratio);
* peak training memory at 224 px, batch 8, no activation checkpointing, SW-T / ConvNeXt-T: each
  model in a fresh subprocess (so no allocator cache or other model is counted), which records
  its resident set size after imports, builds the model and runs two training steps; the figure
  is the process's peak RSS (Linux ``VmHWM``) minus that baseline: weights, gradients, AdamW
  state and the activations of a step, what a user's training process holds. (Not
  ``ru_maxrss``: a child started by fork + exec inherits the parent's maximum, which here is
  the benchmark's own, several GB.) The peak of the second step alone over the memory held
  before it (``VmHWM`` reset, :func:`peak_memory`) is given too.

The reference ConvNeXt-T is timm's own ``convnext_tiny`` when timm imports (through the same
``torchvision::nms``/``qnms`` schema shim the tests use; this is a benchmark, not library
code), else ours; the JSON says which. Writes ``benchmarks/results/targets.json`` and ``.png``.

Run: ``python benchmarks/bench_targets.py [--threads 2] [--repeats 7] [--quick]
[--rows deploy train_step train_memory] [--out DIR]`` (``--quick``: 3 repeats, the same
shapes; ``--rows``: measure only some figures).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import nn

from shiftwise.models import create_model
from shiftwise.tools.benchmarking.environment import describe_environment, write_json
from shiftwise.tools.benchmarking.models import model_call
from shiftwise.tools.benchmarking.timing import (
    measure_interleaved,
    paired_ratio,
    peak_memory,
)
from shiftwise.tools.export import deploy_form, export_onnx, onnxruntime_session

RESULTS = Path(__file__).parent / "results"
MODELS = {"sw": "sw_tiny", "slak": "slak_tiny"}
RUNTIMES = ("torch", "onnxruntime")
ROWS = ("deploy", "train_step", "train_memory")
TARGETS = {
    "deploy_sw_over_convnext": 0.85,
    "deploy_sw_over_slak": 1.5,
    "train_step_sw_over_convnext": 0.75,
    "train_memory_sw_over_convnext": 1.25,
}
_TORCHVISION_SHIM: list[torch.library.Library] = []


def import_timm() -> Any:
    """The ``timm`` module (defining the two torchvision op schemas it needs first), or None."""
    try:
        if not _TORCHVISION_SHIM:
            library = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _TORCHVISION_SHIM.append(library)
        import timm
    except (ImportError, RuntimeError):
        return None
    return timm


def reference_convnext() -> tuple[nn.Module, str]:
    """timm's ``convnext_tiny`` (random weights) when timm imports, else ours; and its label."""
    timm = import_timm()
    if timm is None:
        return create_model("convnext_tiny"), "shiftwise convnext_tiny (timm not importable)"
    return timm.create_model("convnext_tiny", pretrained=False), "timm convnext_tiny"


def build(name: str) -> nn.Module:
    """``convnext`` (the reference), or a shiftwise model of :data:`MODELS`."""
    return reference_convnext()[0] if name == "convnext" else create_model(MODELS[name])


def measure_deploy(repeats: int, threads: int) -> dict[str, Any]:
    """Deploy img/s of SW-T, SLaK-T and ConvNeXt-T in both runtimes at batch 1 and 8, 224 px."""
    models = {name: build(name) for name in ("sw", "slak", "convnext")}
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as folder:
        # one ONNX file per model (dynamic batch) serves both batch sizes
        example = torch.randn(1, 3, 224, 224)
        sessions = {}
        for name, model in models.items():
            print(f"exporting {name} to ONNX", flush=True)
            path = export_onnx(
                deploy_form(copy.deepcopy(model)), Path(folder) / f"{name}.onnx", example
            )
            sessions[name] = onnxruntime_session(path, threads)
        for batch in (1, 8):
            x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
            calls = {}
            for name, model in models.items():
                calls["torch", name] = model_call(model, x, "deploy")
                session, feed = sessions[name], {"images": x.numpy()}
                calls["onnxruntime", name] = lambda s=session, f=feed: s.run(None, f)
            print(f"deploy batch {batch}: timing {len(calls)} variants", flush=True)
            stats = measure_interleaved(calls, torch.device("cpu"), repeats=repeats, warmup=1)
            entry: dict[str, Any] = {"images_per_s": {}, "step": {}}
            for (runtime, name), stat in stats.items():
                entry["images_per_s"][f"{runtime}/{name}"] = batch / stat.median
                entry["step"][f"{runtime}/{name}"] = stat.to_dict()
            for runtime in RUNTIMES:
                entry[f"{runtime}/sw_over_convnext"] = paired_ratio(
                    stats[runtime, "convnext"], stats[runtime, "sw"]
                )
                entry[f"{runtime}/sw_over_slak"] = paired_ratio(
                    stats[runtime, "slak"], stats[runtime, "sw"]
                )
            for name in models:
                entry[f"onnxruntime_over_torch/{name}"] = paired_ratio(
                    stats["torch", name], stats["onnxruntime", name]
                )
            result[f"batch_{batch}"] = entry
            del calls
    return result


def measure_train_step(repeats: int) -> dict[str, Any]:
    """Training step time of SW-T and ConvNeXt-T at 128 px, batch 8, interleaved."""
    x = torch.randn(8, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    calls = {name: model_call(build(name), x, "train") for name in ("sw", "convnext")}
    print("train step 128 px batch 8: timing", flush=True)
    stats = measure_interleaved(calls, torch.device("cpu"), repeats=repeats, warmup=1)
    return {
        "step": {name: stat.to_dict() for name, stat in stats.items()},
        "sw_over_convnext": paired_ratio(stats["convnext"], stats["sw"]),
    }


def memory_child(name: str, threads: int) -> None:
    """In a fresh process: print the peak training memory of ``name`` as one JSON line."""
    torch.set_num_threads(threads)
    import_timm()  # in both children, so that neither counts the import
    baseline = _status_bytes("VmRSS")
    model = build(name)
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    step = model_call(model, x, "train")
    step()  # first step: creates the AdamW state
    step_peak = peak_memory(step, torch.device("cpu"))
    process_peak = _status_bytes("VmHWM") - baseline
    print(json.dumps({"process_peak_bytes": process_peak, "step_peak_bytes": step_peak}))


def measure_memory(threads: int) -> dict[str, Any]:
    """Peak training memory of SW-T and ConvNeXt-T (224 px, batch 8), one subprocess each."""
    result: dict[str, Any] = {}
    for name in ("sw", "convnext"):
        print(f"train memory 224 px batch 8: {name}", flush=True)
        command = [sys.executable, __file__, "--memory-child", name, "--threads", str(threads)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result[name] = json.loads(output.strip().splitlines()[-1])
    result["sw_over_convnext"] = (
        result["sw"]["process_peak_bytes"] / result["convnext"]["process_peak_bytes"]
    )
    return result


def _status_bytes(field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM``) of ``/proc/self/status`` in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def table_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, float], float, bool]]:
    """``(figure, ratio {median, q1, q3}, target, higher is better)`` for each target row."""
    rows = []
    for batch in ("batch_1", "batch_8") if "deploy" in result else ():
        for runtime in RUNTIMES:
            entry = result["deploy"][batch]
            rows.append(
                (
                    f"deploy {batch.replace('_', ' ')} SW-T/ConvNeXt-T {runtime}",
                    entry[f"{runtime}/sw_over_convnext"],
                    TARGETS["deploy_sw_over_convnext"],
                    True,
                )
            )
            rows.append(
                (
                    f"deploy {batch.replace('_', ' ')} SW-T/SLaK-T {runtime}",
                    entry[f"{runtime}/sw_over_slak"],
                    TARGETS["deploy_sw_over_slak"],
                    True,
                )
            )
    if "train_step" in result:
        rows.append(
            (
                "train step SW-T/ConvNeXt-T (128 px, batch 8)",
                result["train_step"]["sw_over_convnext"],
                TARGETS["train_step_sw_over_convnext"],
                True,
            )
        )
    if "train_memory" in result:
        memory = result["train_memory"]["sw_over_convnext"]
        rows.append(
            (
                "train peak memory SW-T/ConvNeXt-T (224 px, batch 8)",
                {"median": memory, "q1": memory, "q3": memory},
                TARGETS["train_memory_sw_over_convnext"],
                False,
            )
        )
    return rows


def plot(result: dict[str, Any], path: Path) -> None:
    """Horizontal bars: each target figure (median, quartiles) against its target."""
    rows = table_rows(result)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    for i, (_, ratio, target, higher) in enumerate(rows):
        met = ratio["median"] >= target if higher else ratio["median"] <= target
        error = [[ratio["median"] - ratio["q1"]], [ratio["q3"] - ratio["median"]]]
        ax.barh(i, ratio["median"], xerr=error, color="tab:green" if met else "tab:red")
        ax.plot([target, target], [i - 0.4, i + 0.4], color="black")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([row[0] for row in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio (median, IQR); black tick = target")
    ax.set_title(f"{result['reference']}, {result['threads']} threads")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats (same shapes)")
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=ROWS,
        default=list(ROWS),
        help="which figures to measure (default all)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--memory-child", choices=("sw", "convnext"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.threads)
        return
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else args.repeats
    result: dict[str, Any] = {
        "reference": reference_convnext()[1],
        "threads": args.threads,
        "repeats": repeats,
        "quick": args.quick,
        "targets": TARGETS,
    }
    if "deploy" in args.rows:
        result["deploy"] = measure_deploy(repeats, args.threads)
    if "train_step" in args.rows:
        result["train_step"] = measure_train_step(repeats)
    if "train_memory" in args.rows:
        result["train_memory"] = measure_memory(args.threads)
    payload = {"environment": describe_environment(torch.device("cpu")), "result": result}
    write_json(args.out / "targets.json", payload)
    plot(result, args.out / "targets.png")
    for label, ratio, target, higher in table_rows(result):
        sign = ">=" if higher else "<="
        print(
            f"{label}: {ratio['median']:.3f} (IQR {ratio['q1']:.3f}-{ratio['q3']:.3f}); "
            f"target {sign} {target}"
        )
    print(f"-> {args.out / 'targets.json'}, {args.out / 'targets.png'}")


if __name__ == "__main__":
    main()
