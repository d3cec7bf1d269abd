"""``shiftwise export``: re-parameterise a model, export it to ONNX and check it in onnxruntime.

The export and its check are :mod:`shiftwise.deploy.export`; this module parses and checks
the options, builds the model (weights from ``--checkpoint`` if given) and prints the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from shiftwise.deploy import export as export_library
from shiftwise.deploy.export import (
    DEFAULT_OPSET,
    ExportReport,
    check_opset,
    deploy_form,
    export_checked,
)
from shiftwise.devices import available_memory, check_memory
from shiftwise.errors import UsageError
from shiftwise.io import check_output_not_input
from shiftwise.models import create_model, min_input_size
from shiftwise.models.arguments import (
    FLOAT_BYTES,
    estimate_activation_bytes,
    estimate_parameters,
)
from shiftwise.models.registry import check_model_arguments
from shiftwise.models.weights import model_from_weights, recorded_int
from shiftwise.tools import check_model_names

__all__ = ["export_and_check", "register", "run"]

logger = logging.getLogger(__name__)

# A side beyond this is a typo, not an export.
MAX_IMG_SIZE = 4096
MAX_REPEATS = 1000  # latency repeats: beyond this the measurement is a hang, not a figure
DEFAULT_IN_CHANS = 3
DEFAULT_IMG_SIZE = 224


def build_model(args: argparse.Namespace) -> tuple[nn.Module, int, int]:
    """The model of ``args`` with its checkpoint weights; returns ``(model, in_chans, size)``.

    ``--in-chans`` (``None``: the checkpoint's, else 3) must agree with what a checkpoint
    records."""
    if args.checkpoint is not None:
        model, metadata = model_from_weights(
            args.checkpoint,
            args.model,
            args.weights,
            flag="--checkpoint",
            defaults={"in_chans": args.in_chans or DEFAULT_IN_CHANS},
            num_classes=args.num_classes,
        )
        in_chans = recorded_int(
            metadata, "in_chans", args.in_chans or DEFAULT_IN_CHANS, args.checkpoint, "--checkpoint"
        )
        if args.in_chans is not None and in_chans != args.in_chans:
            raise UsageError(
                f"--in-chans: {str(args.checkpoint)!r} records a model with {in_chans} input "
                f"channels, got {args.in_chans}"
            )
    else:
        metadata = {}
        in_chans = args.in_chans or DEFAULT_IN_CHANS
        kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
        model = create_model(args.model, in_chans=in_chans, **kwargs)
    size = args.img_size or recorded_int(
        metadata, "image_size", DEFAULT_IMG_SIZE, args.checkpoint, "--checkpoint"
    )
    return model, in_chans, size


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="re-parameterise a model and export it to ONNX (checked in onnxruntime)",
        description=export_library.__doc__.split("\n\n")[1],
    )
    parser.add_argument("model", metavar="MODEL", help="model name (shiftwise.list_models())")
    parser.add_argument("--checkpoint", default=None, help="weights (.safetensors or state)")
    parser.add_argument("--weights", default="model", help="model or ema (default: model)")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--img-size", type=int, default=None, help="default: checkpoint or 224")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="batch of the latency measurement (default 1)"
    )
    parser.add_argument(
        "--in-chans", type=int, default=None, help="default: the checkpoint's, else 3"
    )
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"default {DEFAULT_OPSET}")
    parser.add_argument("--atol", type=float, default=1e-4, help="max abs error allowed")
    parser.add_argument("--repeats", type=int, default=5, help="latency repeats")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def export_and_check(args: argparse.Namespace) -> ExportReport:
    """Everything ``shiftwise export`` does; raises :class:`UsageError` when a check fails."""
    if args.batch_size < 1:
        raise UsageError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    check_model_names(args.model, "MODEL")
    _check_img_size(args.img_size, args.model)
    check_opset(args.opset)
    _check_sizes(args)
    output = Path(args.output)
    if output.suffix != ".onnx":
        raise UsageError(f"--output: expected a path ending in .onnx, got {str(output)!r}")
    if output.is_dir():
        raise UsageError(f"--output: {str(output)!r} is a directory, expected an .onnx file")
    if args.checkpoint is not None:
        check_output_not_input(output, [Path(args.checkpoint)], "--output")
    model, in_chans, size = build_model(args)
    _check_img_size(size, args.model)
    _check_activations(args, size)  # again: a checkpoint may record the size
    model = deploy_form(model)
    example = torch.randn(
        args.batch_size, in_chans, size, size, generator=torch.Generator().manual_seed(0)
    )
    logger.info("exporting %s at %dx%d to %s", args.model, size, size, output)
    return export_checked(model, output, example, args.opset, args.atol, args.repeats)


def _check_sizes(args: argparse.Namespace) -> None:
    """The numeric options, before any work (the model's memory when built from options)."""
    if args.in_chans is not None and args.in_chans < 1:
        raise UsageError(f"--in-chans: expected an integer >= 1, got {args.in_chans}")
    if args.num_classes is not None and args.num_classes < 0:
        raise UsageError(f"--num-classes: expected an integer >= 0, got {args.num_classes}")
    if not (math.isfinite(args.atol) and args.atol >= 0):
        raise UsageError(f"--atol: expected a finite number >= 0, got {args.atol}")
    if not 1 <= args.repeats <= MAX_REPEATS:
        raise UsageError(
            f"--repeats: expected an integer in [1, {MAX_REPEATS}], got {args.repeats}"
        )
    if args.img_size is not None or args.checkpoint is None:
        _check_activations(args, args.img_size or DEFAULT_IMG_SIZE)
    if args.checkpoint is None:
        in_chans = args.in_chans or DEFAULT_IN_CHANS
        num_classes = 1000 if args.num_classes is None else args.num_classes
        # The model, its deploy form and the exporter's copy are alive at once.
        arguments = {**check_model_arguments(args.model), "num_classes": num_classes}
        copies = 3 * FLOAT_BYTES
        with_classes = copies * estimate_parameters({**arguments, "in_chans": DEFAULT_IN_CHANS})
        check_memory(
            copies * estimate_parameters({**arguments, "in_chans": in_chans}),
            f"exporting {args.model} ({in_chans} input channels, {num_classes} classes)",
            "--num-classes" if with_classes > available_memory() else "--in-chans",
        )


def _check_activations(args: argparse.Namespace, size: int) -> None:
    single = estimate_activation_bytes(check_model_arguments(args.model), size)
    check_memory(
        args.batch_size * single,
        f"exporting {args.model} at batch {args.batch_size}, {size}x{size}",
        "--batch-size" if single <= available_memory() else "--img-size",
    )


def _check_img_size(size: int | None, model: str) -> None:
    smallest = min_input_size(model)
    if size is not None and not smallest <= size <= MAX_IMG_SIZE:
        raise UsageError(
            f"--img-size: expected an integer in [{smallest}, {MAX_IMG_SIZE}] (the models "
            f"reduce their input {smallest} times), got {size}"
        )


def run(args: argparse.Namespace) -> int:
    report = export_and_check(args)
    if args.json:
        print(json.dumps({**asdict(report), "speedup": report.speedup}))
    else:
        print(
            f"wrote {report.path}: input {report.input_shape}, {len(report.op_types)} operator "
            f"types ({', '.join(report.op_types)}), max abs error vs PyTorch "
            f"{report.max_abs_error:.2e} at batch "
            f"{', '.join(map(str, report.checked_batch_sizes))}; "
            f"latency PyTorch {report.torch_ms:.1f} ms, onnxruntime {report.onnxruntime_ms:.1f} ms "
            f"({report.speedup:.2f}x)"
        )
    return 0
