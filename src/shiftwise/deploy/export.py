"""Re-parameterise a model, export it to ONNX and check it in onnxruntime (``shiftwise export``).

Steps: build the model (weights from ``--checkpoint`` if given), :func:`shiftwise.reparameterize`
it (on CPU its ShiftWiseConv2d operators run their ``auto`` strategy, ``strips``: plain
depthwise convolutions, so the graph holds standard ONNX operators only — no custom op; the
check below rejects any other), export with
``torch.onnx.export(dynamo=True)`` (batch axis dynamic, height and width fixed to
``--img-size``), fold every computation on weights into initializers, then run the ONNX model
in onnxruntime at batch 1 and 4 from the one file and compare with PyTorch (max abs error must
stay within ``--atol``, default 1e-4) and time both side by side at ``--batch-size``.

Needs the ``export`` extra (``onnx``, ``onnxruntime``, ``onnxscript``).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shiftwise.analysis.timing import measure_interleaved
from shiftwise.errors import UsageError, WriteError
from shiftwise.models import reparameterize

__all__ = [
    "CHECKED_BATCH_SIZES",
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "ExportReport",
    "check_opset",
    "computed_conv_weights",
    "deploy_form",
    "export_checked",
    "export_onnx",
    "input_shape",
    "non_standard_ops",
    "onnxruntime_session",
    "op_types",
    "verify_onnx",
]

logger = logging.getLogger(__name__)

STANDARD_DOMAINS = ("", "ai.onnx")
# torch.onnx's own default; from opset 20 GELU is one ``Gelu`` node (opset 18: Erf, Div, Mul,
# Add), which onnxruntime runs as one kernel or fuses with a preceding bias (BiasGelu).
DEFAULT_OPSET = 20
# onnxruntime runs every exported file at these batch sizes (the batch axis is dynamic).
CHECKED_BATCH_SIZES = (1, 4)
# Fold weight computations of any size into initializers (onnxscript's default stops at 8192
# elements, which left the strip kernels' zero-tap Pad in the graph from 224 px on).
_NO_SIZE_LIMIT = 2**62


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_checked` found: the file, its input shape and operator types, the error of
    onnxruntime against PyTorch (largest over the checked batch sizes) and the timings."""

    path: str
    input_shape: list[int | str]
    op_types: list[str]
    checked_batch_sizes: list[int]
    max_abs_error: float
    torch_ms: float
    onnxruntime_ms: float

    @property
    def speedup(self) -> float:
        """PyTorch time / onnxruntime time (> 1: onnxruntime is faster)."""
        return self.torch_ms / self.onnxruntime_ms


def export_onnx(
    model: nn.Module, path: Path, example: torch.Tensor, opset: int = DEFAULT_OPSET
) -> Path:
    """Export the (already deploy-form, eval-mode) ``model`` traced on ``example`` ``[B, C, H, W]``.

    The batch axis of input and output is dynamic (named ``batch``); channels, height and width
    are those of ``example``: kernel taps that can only meet padding are cropped by input size
    (:func:`~shiftwise.ops.oriented_conv.depthwise_conv2d`), so the graph is specific to
    ``H x W``. Traced under ``torch.no_grad()`` so that every operator takes its inference
    form (no training-only transposes). Every computation on weights alone (the zero taps that
    even out a strip kernel's padding, transposes) is then folded into initializers, whatever
    its size: left in the graph, a ``Pad`` on a conv weight is merged into that conv's *input*
    by onnxruntime's ``PadFusion`` rewrite, which leaves the weight dangling ("Node input 'pad'
    is not a graph input ..."). The file is written atomically. Returns ``path``.
    """
    import onnxscript

    path.parent.mkdir(parents=True, exist_ok=True)
    if example.shape[0] == 1:  # a size-1 axis would be specialised to a constant
        example = example.expand(2, *example.shape[1:])
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["images"],
            output_names=["output"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    onnxscript.optimizer.optimize(
        program.model, input_size_limit=_NO_SIZE_LIMIT, output_size_limit=_NO_SIZE_LIMIT
    )
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        program.save(str(temporary))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
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


def computed_conv_weights(path: Path) -> list[str]:
    """Names of the ``Conv`` nodes whose weight is computed in the graph, not an initializer."""
    import onnx

    graph = onnx.load(str(path)).graph
    initializers = {tensor.name for tensor in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "Conv" and node.input[1] not in initializers
    ]


def input_shape(path: Path) -> list[int | str]:
    """Shape of the first input, a dynamic axis by name (e.g. ``["batch", 3, 224, 224]``)."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [dim.dim_param if dim.HasField("dim_param") else dim.dim_value for dim in dims]


def onnxruntime_session(
    path: Path, threads: int | None = None, optimized_path: Path | None = None
) -> Any:
    """An onnxruntime CPU ``InferenceSession`` of ``path`` with all graph optimisations on.

    ``threads``: intra-op threads (default ``torch.get_num_threads()``, so both runtimes use
    the same cores); inter-op parallelism is off (sequential execution). ``optimized_path``:
    where onnxruntime saves the graph after its optimisations (to see what it fused).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_onnx(
    model: nn.Module,
    path: Path,
    example: torch.Tensor,
    repeats: int = 5,
    batch_sizes: Sequence[int] = CHECKED_BATCH_SIZES,
) -> tuple[float, float, float]:
    """``(max abs error, torch seconds, onnxruntime seconds)`` of the ONNX file vs ``model``.

    One onnxruntime session of ``path`` is checked at every size of ``batch_sizes`` (random
    inputs shaped like ``example`` otherwise); the error is the largest of them. Times are the
    medians of ``repeats`` interleaved calls on ``example``, both on CPU.
    """
    session = onnxruntime_session(path)
    name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(1)
    error = 0.0
    for batch in batch_sizes:
        x = torch.randn(batch, *example.shape[1:], generator=generator)
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
        if got.shape != expected.shape:
            raise ValueError(
                f"MODEL: onnxruntime output shape {tuple(got.shape)} at batch {batch}, "
                f"PyTorch {tuple(expected.shape)}"
            )
        error = max(error, float((got - expected).abs().max()))
    feed = {name: example.numpy()}

    def torch_call() -> object:
        with torch.no_grad():
            return model(example)

    stats = measure_interleaved(
        {"torch": torch_call, "onnxruntime": lambda: session.run(None, feed)},
        torch.device("cpu"),
        repeats=repeats,
    )
    return error, stats["torch"].median, stats["onnxruntime"].median


def deploy_form(model: nn.Module) -> nn.Module:
    """``model`` (in place) in the form that is exported: re-parameterised, eval mode (on CPU
    a ShiftWiseConv2d's ``auto`` strategy is ``strips``: standard ONNX operators only)."""
    return reparameterize(model.eval())


MIN_OPSET = 18  # torch's ONNX exporter writes opset 18 at least (older ones are upgraded)


def check_opset(opset: int) -> None:
    """Raise :class:`UsageError` unless torch's exporter and this onnx can write ``opset``."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise UsageError(f"--opset: expected an integer in [{MIN_OPSET}, {newest}], got {opset}")


def export_checked(
    model: nn.Module,
    output: Path,
    example: torch.Tensor,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    repeats: int = 5,
) -> ExportReport:
    """Export the deploy-form ``model`` (:func:`deploy_form`) traced on ``example`` ``[B, C, H,
    W]`` to ``output`` and check the file: standard operators only (:func:`non_standard_ops`)
    and onnxruntime within ``atol`` of PyTorch (:func:`verify_onnx`, which also times both).

    The file is written beside ``output`` and renamed over it only once every check has
    passed: a failed export never replaces (or leaves behind) a file. Raises
    :class:`UsageError` when a check fails, :class:`WriteError` when the file cannot be written.
    """
    candidate = output.with_name(f".{output.stem}.{os.getpid()}-{secrets.token_hex(4)}.onnx")
    try:
        try:
            export_onnx(model, candidate, example, opset)
        except OSError as error:
            raise WriteError(
                f"--output: cannot write {str(output)!r} ({error.strerror or error}); "
                f"{'its previous version is unchanged' if output.exists() else 'no file was left'}"
            ) from None
        foreign = non_standard_ops(candidate)
        if foreign:
            raise UsageError(f"MODEL: the exported graph holds non-standard operators {foreign}")
        error, torch_s, ort_s = verify_onnx(model, candidate, example, repeats)
        if not error <= atol:
            kept = "the existing file is unchanged" if output.exists() else "nothing was written"
            raise UsageError(
                f"--atol: onnxruntime output differs from PyTorch by {error:.3g} > {atol:g}; {kept}"
            )
        report = ExportReport(
            str(output),
            input_shape(candidate),
            op_types(candidate),
            list(CHECKED_BATCH_SIZES),
            error,
            torch_s * 1e3,
            ort_s * 1e3,
        )
        os.replace(candidate, output)
    finally:
        candidate.unlink(missing_ok=True)
    return report
