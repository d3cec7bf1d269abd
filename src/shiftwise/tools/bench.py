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
(see :mod:`shiftwise.benchmarking`). ``--quick`` shrinks every shape to run in seconds
(what the tests run; its figures mean nothing; its models use 7x7 kernels at 32x32).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import torch

from shiftwise.benchmarking.models import RUNTIMES
from shiftwise.benchmarking.suites import SUITES, memory_estimate, run_suite
from shiftwise.devices import available_memory, check_device, check_memory
from shiftwise.errors import UsageError
from shiftwise.models import list_models, min_input_size
from shiftwise.tools import check_output_directory

__all__ = ["register", "run", "summarise"]

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("benchmarks/results")
# Beyond these a run is a hang, not a measurement.
MAX_REPEATS, MAX_WARMUP, MAX_IMAGE_SIZE = 1000, 100, 4096


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


def _check_sizes(args: argparse.Namespace, device: torch.device) -> None:
    """Counts in range and every suite's memory estimate within the device's (before work)."""
    for name, largest in (("repeats", MAX_REPEATS), ("warmup", MAX_WARMUP)):
        value = getattr(args, name)
        if value > largest:
            raise UsageError(f"--{name}: expected an integer <= {largest}, got {value}")
    if args.threads is not None and args.threads > (os.cpu_count() or 1):
        raise UsageError(
            f"--threads: expected at most the {os.cpu_count()} CPUs of this machine, "
            f"got {args.threads}"
        )
    smallest = max(min_input_size(name) for name in list_models())
    if args.image_size is not None and not smallest <= args.image_size <= MAX_IMAGE_SIZE:
        raise UsageError(
            f"--image-size: expected an integer in [{smallest}, {MAX_IMAGE_SIZE}], "
            f"got {args.image_size}"
        )
    for suite in SUITES if args.suite == "all" else (args.suite,):
        needed = memory_estimate(suite, device, args.batch, args.image_size, args.quick)
        single = memory_estimate(suite, device, 1, args.image_size, args.quick)
        check_memory(
            needed,
            f"the {suite} suite at batch {args.batch or 'default'}",
            "--batch" if single <= available_memory(device) else "--image-size",
            device,
        )


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
    _check_sizes(args, device)
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
