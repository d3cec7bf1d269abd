"""``shiftwise export``: re-parameterise a model, export it to ONNX and check it in onnxruntime.

The export and its check are :mod:`shiftwise.deploy.export`; this module parses and checks
the options, builds the model (weights from ``--checkpoint`` if given) and prints the report.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from shiftwise.analysis.input_size import min_input_size
from shiftwise.deploy import export as export_library
from shiftwise.deploy.export import (
    DEFAULT_OPSET,
    ExportReport,
    check_opset,
    deploy_form,
    export_checked,
)
from shiftwise.errors import UsageError
from shiftwise.models import create_model
from shiftwise.models.weights import model_from_weights, recorded_int
from shiftwise.tools import check_model_names

__all__ = ["export_and_check", "register", "run"]

logger = logging.getLogger(__name__)

# A side beyond this is a typo, not an export.
MAX_IMG_SIZE = 4096


def build_model(args: argparse.Namespace) -> tuple[nn.Module, int, int]:
    """The model of ``args`` with its checkpoint weights; returns ``(model, in_chans, size)``."""
    if args.checkpoint is not None:
        model, metadata = model_from_weights(
            args.checkpoint,
            args.model,
            args.weights,
            flag="--checkpoint",
            defaults={"in_chans": args.in_chans},
            num_classes=args.num_classes,
        )
        in_chans = recorded_int(
            metadata, "in_chans", args.in_chans, args.checkpoint, "--checkpoint"
        )
    else:
        metadata = {}
        in_chans = args.in_chans
        kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
        model = create_model(args.model, in_chans=in_chans, **kwargs)
    size = args.img_size or recorded_int(
        metadata, "image_size", 224, args.checkpoint, "--checkpoint"
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
    parser.add_argument("--in-chans", type=int, default=3)
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
    _check_img_size(args.img_size)
    check_opset(args.opset)
    check_model_names(args.model, "MODEL")
    output = Path(args.output)
    if output.suffix != ".onnx":
        raise UsageError(f"--output: expected a path ending in .onnx, got {str(output)!r}")
    if output.is_dir():
        raise UsageError(f"--output: {str(output)!r} is a directory, expected an .onnx file")
    model, in_chans, size = build_model(args)
    _check_img_size(size)
    model = deploy_form(model)
    example = torch.randn(
        args.batch_size, in_chans, size, size, generator=torch.Generator().manual_seed(0)
    )
    logger.info("exporting %s at %dx%d to %s", args.model, size, size, output)
    return export_checked(model, output, example, args.opset, args.atol, args.repeats)


def _check_img_size(size: int | None) -> None:
    smallest = min_input_size()
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
