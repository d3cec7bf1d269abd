"""``shiftwise export``: re-parameterise a model, export it to ONNX and check it in onnxruntime.

Steps: build the model (weights from ``--checkpoint`` if given), :func:`shiftwise.reparameterize`
it (on CPU its ShiftWiseConv2d operators run their ``auto`` strategy, ``strips``: plain
depthwise convolutions, so the graph holds standard ONNX operators only — no custom op; the
check below rejects any other), export with
``torch.onnx.export(dynamo=True)``, then run the ONNX model in onnxruntime on a random batch
and compare with PyTorch (max abs error must stay within ``--atol``, default 1e-4) and time
both side by side.

Needs the ``export`` extra (``onnx``, ``onnxruntime``, ``onnxscript``).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from shiftwise.models import create_model, reparameterize
from shiftwise.tools.benchmarking.timing import measure_interleaved
from shiftwise.tools.checkpoint import model_from_weights

__all__ = ["ExportReport", "export_onnx", "non_standard_ops", "register", "run", "verify_onnx"]

logger = logging.getLogger(__name__)

STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class ExportReport:
    """What :func:`run` found: the file, its operator types, the error and the timings."""

    path: str
    op_types: list[str]
    max_abs_error: float
    torch_ms: float
    onnxruntime_ms: float

    @property
    def speedup(self) -> float:
        """PyTorch time / onnxruntime time (> 1: onnxruntime is faster)."""
        return self.torch_ms / self.onnxruntime_ms


def export_onnx(model: nn.Module, path: Path, example: torch.Tensor, opset: int = 18) -> Path:
    """Export the (already deploy-form, eval-mode) ``model`` on ``example`` ``[B, C, H, W]``.

    Shapes are static (those of ``example``). Returns ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        opset_version=opset,
        input_names=["images"],
        output_names=["output"],
        verbose=False,
    )
    program.save(str(path))
    return path


def non_standard_ops(path: Path) -> list[str]:
    """``domain::op_type`` of every node (functions included) outside the standard domain."""
    import onnx

    graph_model = onnx.load(str(path))
    nodes = list(graph_model.graph.node)
    for function in graph_model.functions:
        nodes.extend(function.node)
    local = {(function.domain, function.name) for function in graph_model.functions}
    return sorted(
        {
            f"{node.domain}::{node.op_type}"
            for node in nodes
            if node.domain not in STANDARD_DOMAINS and (node.domain, node.op_type) not in local
        }
    )


def op_types(path: Path) -> list[str]:
    """Sorted operator types of the main graph."""
    import onnx

    return sorted({node.op_type for node in onnx.load(str(path)).graph.node})


def verify_onnx(
    model: nn.Module, path: Path, example: torch.Tensor, repeats: int = 5
) -> tuple[float, float, float]:
    """``(max abs error, torch seconds, onnxruntime seconds)`` of the ONNX file vs ``model``.

    Both run on CPU on ``example``; times are medians of ``repeats`` interleaved calls.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: example.numpy()}
    with torch.no_grad():
        expected = model(example)
    got = torch.from_numpy(session.run(None, feed)[0])
    error = float((got - expected).abs().max())

    def torch_call() -> object:
        with torch.no_grad():
            return model(example)

    stats = measure_interleaved(
        {"torch": torch_call, "onnxruntime": lambda: session.run(None, feed)},
        torch.device("cpu"),
        repeats=repeats,
    )
    return error, stats["torch"].median, stats["onnxruntime"].median


def build_model(args: argparse.Namespace) -> tuple[nn.Module, int, int]:
    """The model of ``args`` with its checkpoint weights; returns ``(model, in_chans, size)``."""
    if args.checkpoint is not None:
        model, metadata = model_from_weights(
            args.model,
            args.checkpoint,
            args.weights,
            defaults={"in_chans": args.in_chans},
            num_classes=args.num_classes,
        )
        in_chans = int(metadata.get("in_chans", args.in_chans))
    else:
        metadata = {}
        in_chans = args.in_chans
        kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
        model = create_model(args.model, in_chans=in_chans, **kwargs)
    size = args.img_size or int(metadata.get("image_size", 224))
    return model, in_chans, size


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="re-parameterise a model and export it to ONNX (checked in onnxruntime)",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("model", metavar="MODEL", help="model name (shiftwise.list_models())")
    parser.add_argument("--checkpoint", default=None, help="weights (.safetensors or state)")
    parser.add_argument("--weights", default="model", help="model or ema (default: model)")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--img-size", type=int, default=None, help="default: checkpoint or 224")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--atol", type=float, default=1e-4, help="max abs error allowed")
    parser.add_argument("--repeats", type=int, default=5, help="latency repeats")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def export_and_check(args: argparse.Namespace) -> ExportReport:
    """Everything ``shiftwise export`` does; raises ``ValueError`` when the check fails."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    if args.img_size is not None and args.img_size < 1:
        raise ValueError(f"--img-size: expected a positive integer, got {args.img_size}")
    output = Path(args.output)
    if output.suffix != ".onnx":
        raise ValueError(f"--output: expected a path ending in .onnx, got {str(output)!r}")
    model, in_chans, size = build_model(args)
    model = reparameterize(model.eval())
    example = torch.randn(
        args.batch_size, in_chans, size, size, generator=torch.Generator().manual_seed(0)
    )
    logger.info("exporting %s at %dx%d to %s", args.model, size, size, output)
    export_onnx(model, output, example, args.opset)
    foreign = non_standard_ops(output)
    if foreign:
        raise ValueError(f"MODEL: the exported graph holds non-standard operators {foreign}")
    error, torch_s, ort_s = verify_onnx(model, output, example, args.repeats)
    if not error <= args.atol:
        raise ValueError(
            f"--atol: onnxruntime output differs from PyTorch by {error:.3g} > {args.atol:g}"
        )
    return ExportReport(str(output), op_types(output), error, torch_s * 1e3, ort_s * 1e3)


def run(args: argparse.Namespace) -> int:
    report = export_and_check(args)
    if args.json:
        print(json.dumps({**asdict(report), "speedup": report.speedup}))
    else:
        print(
            f"wrote {report.path}: {len(report.op_types)} operator types "
            f"({', '.join(report.op_types)}), max abs error vs PyTorch {report.max_abs_error:.2e}; "
            f"latency PyTorch {report.torch_ms:.1f} ms, onnxruntime {report.onnxruntime_ms:.1f} ms "
            f"({report.speedup:.2f}x)"
        )
    return 0
