"""``shiftwise erf``: effective receptive field heatmaps (PNG) and area-ratio table (JSON).

The procedure is :mod:`shiftwise.analysis.erf`; this module parses the options, checks them,
and writes and prints the results.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from shiftwise.analysis import erf as erf_analysis
from shiftwise.analysis.erf import THRESHOLDS, compare_erfs, image_files, iter_images, plot_erf
from shiftwise.benchmarking.environment import describe_environment, write_json
from shiftwise.devices import available_memory, check_device, check_memory
from shiftwise.errors import UsageError
from shiftwise.io import check_output_not_input
from shiftwise.models import min_input_size
from shiftwise.models.arguments import FLOAT_BYTES, estimate_activation_bytes
from shiftwise.models.registry import check_model_arguments
from shiftwise.tools import check_model_names, check_output_directory

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1
MAX_IMAGES = 10_000
MAX_SIZE = 4096


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "erf",
        help="effective receptive field heatmaps (PNG) and area-ratio table (JSON)",
        description=erf_analysis.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models", nargs="+", default=["sw_tiny", "slak_tiny", "convnext_tiny"], metavar="NAME"
    )
    parser.add_argument(
        "--images", default="bundled", help="'bundled' (default), 'noise' or a directory"
    )
    parser.add_argument("--num-images", type=int, default=8, help="images to average (default 8)")
    parser.add_argument("--size", type=int, default=256, help="input side (default 256)")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="weights for model NAME (repeatable); models without one use random init",
    )
    parser.add_argument(
        "--layer-scale",
        type=float,
        default=None,
        help="initial block layer scale for random-init models (default: the model's 1e-6, "
        "which makes every block an identity and hides the kernels; use 1 for a demo)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random init and noise")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.set_defaults(func=run)


def _parse_checkpoints(items: Sequence[str], models: Sequence[str]) -> dict[str, Path]:
    checkpoints = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in models:
            raise UsageError(
                f"--checkpoint: expected NAME=PATH with NAME one of {list(models)}, got {item!r}"
            )
        checkpoints[name] = Path(path)
    return checkpoints


def _check_sizes(args: argparse.Namespace) -> None:
    """Seed, image count and size in range, and the images and one model's backward pass
    within the memory available (before any work)."""
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed: expected an integer in [0, 2**63 - 1], got {args.seed}")
    if not 1 <= args.num_images <= MAX_IMAGES:
        raise UsageError(
            f"--num-images: expected an integer in [1, {MAX_IMAGES}] (the papers average 50), "
            f"got {args.num_images}"
        )
    smallest = max(min_input_size(name) for name in args.models)
    if not smallest <= args.size <= MAX_SIZE:
        raise UsageError(
            f"--size: expected an integer in [{smallest}, {MAX_SIZE}], got {args.size}"
        )
    image = 3 * args.size * args.size * FLOAT_BYTES
    single = image + max(
        estimate_activation_bytes(check_model_arguments(name), args.size) for name in args.models
    )
    check_memory(
        single + (args.num_images - 1) * image,
        f"{args.num_images} images of {args.size}x{args.size}",
        "--num-images" if single <= available_memory() else "--size",
    )


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device, "--device")
    check_model_names(args.models, "--models")
    checkpoints = _parse_checkpoints(args.checkpoint, args.models)
    if args.layer_scale is not None and not math.isfinite(args.layer_scale):
        raise UsageError(f"--layer-scale: expected a finite number, got {args.layer_scale}")
    _check_sizes(args)
    inputs = list(checkpoints.values())
    if args.images not in ("bundled", "noise"):
        inputs += image_files(Path(args.images))
    for name in ("erf.png", "erf.json"):
        check_output_not_input(args.out / name, inputs, "--out")
    check_output_directory(args.out, "--out")  # before the work, not after it
    images = list(iter_images(args.images, args.num_images, args.size, args.seed))
    result = compare_erfs(args.models, images, device, checkpoints, args.layer_scale, args.seed)
    source = args.images if args.images in ("bundled", "noise") else str(args.images)
    init = "random init" if len(checkpoints) < len(args.models) else "trained"
    scale = "" if args.layer_scale is None else f", layer scale {args.layer_scale:g}"
    title = f"ERF, {source} images ×{len(images)}, {args.size}², {init}{scale}"
    plot_erf(result.maps, result.tables, args.out / "erf.png", title)
    payload = {
        "procedure": erf_analysis.PROCEDURE,
        "images": source,
        "num_images": result.counts,
        "size": args.size,
        "layer_scale_init": args.layer_scale,
        "weights": result.weights,
        "area_ratios": result.tables,
        "environment": describe_environment(device),
    }
    write_json(args.out / "erf.json", payload)
    header = f"{'model':<16}" + "".join(f"{f't={t:.0%}':>14}" for t in THRESHOLDS)
    print(header)
    for name, table in result.tables.items():
        cells = "".join(f"{table[key]['ratio']:>14.4f}" for key in table)
        print(f"{name:<16}{cells}")
    print(f"  -> {args.out / 'erf.png'}, {args.out / 'erf.json'}")
    return 0
