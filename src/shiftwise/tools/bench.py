"""``shiftwise bench``: operator- and model-level speed, kernel-size scaling, shift-add roofline.

Sub-suites (each writes ``<suite>.json`` and ``<suite>.png`` into ``--out``):

* ``ops``: SW, SLaK, dense large kernel and 7x7 depthwise at the four SW-T stage shapes
  (C = 80/160/320/640 at 56/28/14/7, K = 51/49/47/13; the same C for every operator so the
  ratios compare operators on identical tensors), modes fwd / fwd_bwd / deploy;
* ``sweep``: the large-kernel operators at the SW-T stage-1 shape (C = 80, 56x56) for
  K = 13, 25, 51, 75, 101, mode fwd_bwd (training cost);
* ``roofline``: achieved GB/s of the SW shift-add vs a same-run tensor copy;
* ``models``: img/s and peak memory of sw_tiny, slak_tiny, convnext_tiny, train step and
  deploy inference (ratios against convnext_tiny); ``--runtime onnxruntime`` measures the
  deploy forms exported to ONNX in onnxruntime (all graph optimisations, ``--threads``
  intra-op threads), ``--runtime torch onnxruntime`` both side by side;
* ``all``: the four in turn.

Variants of one comparison are timed interleaved and ratios are medians of per-repeat ratios
(see :mod:`shiftwise.tools.benchmarking`). ``--quick`` shrinks every shape to run in seconds
(what the tests run; its figures mean nothing; its models use 7x7 kernels at 32x32).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from shiftwise.devices import check_device
from shiftwise.errors import UsageError
from shiftwise.tools import check_output_directory
from shiftwise.tools.benchmarking.environment import describe_environment, write_json
from shiftwise.tools.benchmarking.models import RUNTIMES, run_model_suite
from shiftwise.tools.benchmarking.operators import run_kernel_sweep, run_operator_suite
from shiftwise.tools.benchmarking.plots import (
    plot_models,
    plot_operators,
    plot_roofline,
    plot_sweep,
)
from shiftwise.tools.benchmarking.roofline import run_roofline

__all__ = ["SUITES", "register", "run", "run_suite"]

logger = logging.getLogger(__name__)

SUITES = ("ops", "sweep", "roofline", "models")
DEFAULT_OUT = Path("benchmarks/results")

_QUICK: dict[str, dict[str, Any]] = {
    "ops": {"stages": ((8, 8, 13),)},
    "sweep": {"kernel_sizes": (7, 13), "channels": 8, "size": 8, "modes": ("fwd", "fwd_bwd")},
    "roofline": {"stages": ((8, 8, 13),), "copy_numel": 2**20},
    "models": {
        "names": ("sw_atto", "slak_atto", "convnext_atto"),
        "baseline": "convnext_atto",
        "image_size": 32,
        "batch": 2,
        "model_kwargs": {"kernel_sizes": (7, 7, 7, 7)},
    },
}
_PLOTS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "ops": plot_operators,
    "sweep": plot_sweep,
    "roofline": plot_roofline,
    "models": plot_models,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="operator/model timing, kernel-size sweep and shift-add roofline (JSON + PNG)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("suite", choices=(*SUITES, "all"), help="what to measure")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    parser.add_argument(
        "--batch", type=int, default=None, help="batch size (default 1 on CPU, 32 on CUDA)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="model-level input size (default 128 on CPU, 224 on CUDA)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--runtime",
        nargs="+",
        choices=RUNTIMES,
        default=["torch"],
        help="models suite: torch (train + deploy) and/or onnxruntime (deploy; CPU)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes, seconds (tests)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.set_defaults(func=run)


def run_suite(
    suite: str,
    device: torch.device,
    out: Path,
    repeats: int = 5,
    warmup: int = 1,
    batch: int | None = None,
    image_size: int | None = None,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    runtimes: tuple[str, ...] = ("torch",),
) -> dict[str, Any]:
    """Run one suite, write ``out/<suite>.json`` and ``out/<suite>.png``; returns the payload.

    ``runtimes`` applies to the ``models`` suite only."""
    if suite not in SUITES:
        raise UsageError(f"suite: expected one of {SUITES}, got {suite!r}")
    on_cuda = device.type == "cuda"
    batch = batch if batch is not None else (32 if on_cuda else 1)
    kwargs: dict[str, Any] = {
        "repeats": repeats,
        "warmup": warmup,
        "batch": batch,
        "progress": progress,
    }
    if quick:
        kwargs.update(_QUICK[suite])
    if suite == "ops":
        result = run_operator_suite(device, **kwargs)
    elif suite == "sweep":
        result = run_kernel_sweep(device, **kwargs)
    elif suite == "roofline":
        result = run_roofline(device, **kwargs)
    else:
        default_size = kwargs.get("image_size") or (224 if on_cuda else 128)
        kwargs["image_size"] = image_size or default_size
        result = run_model_suite(device, runtimes=runtimes, **kwargs)
    payload = {
        "suite": suite,
        "quick": quick,
        "repeats": repeats,
        "warmup": warmup,
        "environment": describe_environment(device),
        "result": result,
    }
    write_json(out / f"{suite}.json", payload)
    _PLOTS[suite](result, out / f"{suite}.png")
    return payload


def summarise(payload: dict[str, Any]) -> list[str]:
    """Human-readable lines with the headline figures of one suite's payload."""
    suite, result = payload["suite"], payload["result"]
    lines = [f"[{suite}] commit {payload['environment']['commit']}"]
    if suite == "ops":
        for stage in result["stages"]:
            for mode, entry in stage["modes"].items():
                times = ", ".join(
                    f"{name} {s['median_s'] * 1e3:.2f} ms (IQR {s['spread'] * 100:.0f}%)"
                    for name, s in entry["operators"].items()
                )
                ratio = entry.get("sw_over_slak", {}).get("median")
                extra = f"; SW/SLaK {ratio:.2f}x" if ratio is not None else ""
                lines.append(
                    f"  C={stage['channels']} {stage['size']}² K={stage['kernel_size']} "
                    f"{mode}: {times}{extra}"
                )
    elif suite == "sweep":
        for mode, growth in result["growth"].items():
            text = ", ".join(f"{name} x{value:.2f}" for name, value in growth.items())
            lines.append(f"  {mode} {result['growth_definition']}: {text}")
    elif suite == "roofline":
        lines.append(f"  copy {result['copy_gbps_median']:.2f} GB/s (roof)")
        for stage in result["stages"]:
            lines.append(
                f"  C={stage['channels']} {stage['size']}² K={stage['kernel_size']}: "
                f"shift_add {stage['shift_add']['median_s'] * 1e3:.2f} ms = "
                f"{stage['ideal_gbps']:.3f} GB/s ({stage['fraction_of_copy']:.1%} of copy), "
                f"reference {stage['reference']['median_s'] * 1e3:.2f} ms "
                f"(default op x{stage['speedup_over_reference']['median']:.1f} faster), "
                f"reference real traffic {stage['reference_actual_gbps']:.2f} GB/s"
            )
    else:
        for mode, entries in result["modes"].items():
            for name, entry in entries.items():
                memory = entry["peak_memory_bytes"]
                memory_text = f"{memory / 2**20:.0f} MiB" if memory is not None else "n/a"
                to_torch = entry.get("throughput_ratio_to_torch", {}).get("median")
                extra = f", x{to_torch:.3f} vs torch" if to_torch is not None else ""
                lines.append(
                    f"  {mode} {name}: {entry['images_per_s']['median']:.2f} img/s, "
                    f"x{entry['throughput_ratio_to_baseline']['median']:.3f} vs "
                    f"{result['baseline']}{extra}, peak {memory_text}"
                )
    return lines


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device, "--device")
    if "onnxruntime" in args.runtime and device.type != "cpu":
        raise ValueError(f"--runtime: onnxruntime is measured on CPU only, got --device {device}")
    for name in ("repeats", "batch", "image_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {value}")
    if args.warmup < 0:
        raise UsageError(f"--warmup: expected an integer >= 0, got {args.warmup}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    check_output_directory(args.out, "--out")  # before the work, not after it
    suites = SUITES if args.suite == "all" else (args.suite,)
    for suite in suites:
        payload = run_suite(
            suite,
            device,
            args.out,
            repeats=args.repeats,
            warmup=args.warmup,
            batch=args.batch,
            image_size=args.image_size,
            quick=args.quick,
            progress=lambda text: logger.info("%s", text),
            runtimes=tuple(dict.fromkeys(args.runtime)),
        )
        print("\n".join(summarise(payload)))
        print(f"  -> {args.out / (suite + '.json')}, {args.out / (suite + '.png')}")
    return 0
