"""Small-kernel cost targets: SW-T and sw_atto against ConvNeXt, side by side in one process.

Each row times its variants (``runtime:model``) interleaved in rounds
(:func:`shiftwise.analysis.timing.measure_interleaved`), after two untimed calls
each (the first compiles or exports). Ratios are the medians [quartiles] of the per-round
paired ratios (``targets_report.pairwise_ratios``); > 1 means the first model is faster.
Models: SW-T (``sw_tiny``), SLaK-T (``slak_tiny``) and, as references, timm's own
``convnext_tiny`` and ConvNeXt V2-T (``convnextv2_tiny``, random weights; timm imports through
a two-op ``torchvision`` schema shim, as in the tests). Without timm the reference is our
``convnext_tiny`` and V2-T is skipped; the JSON says which.

Rows (``--rows``, default all but ``train_224_compile``):

* ``deploy_b1``, ``deploy_b8``: inference at 224 px, batch 1 / 8, 1000 classes. Every model
  is ``shiftwise.reparameterize``-d once, in eval mode, channels-last weights and input, no
  grad, and timed in three runtimes: ``eager`` PyTorch, ``compile`` (``torch.compile`` of
  that module, default mode, one compilation per batch size) and ``onnxruntime`` (the module
  exported by ``shiftwise.deploy.export.export_onnx``, one file per model with a dynamic batch,
  ``ORT_ENABLE_ALL``, ``--threads`` intra-op threads, sequential).
* ``train_128``, ``train_224``: one training step at batch 8 (forward, cross-entropy,
  backward, AdamW step, gradients set to ``None``), channels-last, train mode, no activation
  checkpointing beyond what a model does by itself; ``eager`` for all four models and, at
  128 px, ``compile`` (``torch.compile`` of the model; loss, backward and AdamW eager) for
  SW-T and ConvNeXt-T. ``train_224_compile``: the compiled step at 224 px, only when asked
  for (``--rows``): compiling SW-T's training step takes minutes at each input size.
* ``train_atto_demo``, ``train_atto_fmnist``: the training step of ``sw_atto``,
  ``slak_atto`` and our ``convnext_atto`` as ``shiftwise train`` runs it on the bundled data
  set (``shiftwise demo``: 64 px, 1 channel, 4 classes) and on Fashion-MNIST (28 px images
  resized to 32 px, 1 channel, 10 classes): ``--width-factor 0.5``, the CPU recipe's batch 64,
  label smoothing 0.1, no drop path, eager, and the trainer's contiguous (NCHW) layout
  (``--atto-channels-last`` to change). They stand for the epoch time of those runs (data
  loading and augmentation excluded).
* ``train_memory``: peak training memory at 224 px, batch 8, channels-last, no activation
  checkpointing, SW-T / ConvNeXt-T: each model in a fresh subprocess, which records its
  resident set size after imports, builds the model and runs two training steps; the figure
  is the process's peak RSS (Linux ``VmHWM``) minus that baseline: weights, gradients, AdamW
  state and one step's activations. (Not ``ru_maxrss``: a child started by fork + exec
  inherits the parent's maximum.)

Each row records the 1-minute / 5 / 15 load average before and after it and the cores other
processes kept busy while it was timed (``machine_load``), and warns above 0.5. The JSON
(written after every row) also holds the commit and path of the ``shiftwise`` it measured,
torch's version and the thread count, so one script measures any checkout:
``PYTHONPATH=/path/to/old/src python benchmarks/bench_targets.py --name before``.

Run: ``python benchmarks/bench_targets.py [--threads 2] [--quick] [--rows ...]
[--runtimes eager compile onnxruntime] [--repeats N] [--name targets] [--out DIR]``
-> ``DIR/NAME.json``, ``DIR/NAME.png``. ``--quick``: 3 rounds per row and no
``torch.compile`` (unless ``--runtimes`` names it).
Compare two runs: ``python benchmarks/bench_targets.py --compare BEFORE.json AFTER.json``
-> the markdown targets table on stdout and in ``DIR/targets_compare.md`` (+ ``.png``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import gc
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from machine_load import (
    LOAD_THRESHOLD,
    load_average,
    load_warnings,
    recording_other_cpu,
    start_warnings,
)
from targets_report import pairwise_ratios, plot, render_table, variant
from torch import nn

import shiftwise
from shiftwise.analysis.timing import measure_interleaved, peak_memory
from shiftwise.benchmarking.environment import describe_environment, write_json

logger = logging.getLogger("bench_targets")

RESULTS = Path(__file__).parent / "results"
RUNTIMES = ("eager", "compile", "onnxruntime")
# in the order measured (the JSON is written after each row)
ROWS = (
    "deploy_b1",
    "deploy_b8",
    "train_128",
    "train_224",
    "train_atto_demo",
    "train_atto_fmnist",
    "train_memory",
    "train_224_compile",
)
# train_224_compile only on demand: compiling SW-T's training step takes minutes at each size
DEFAULT_ROWS = ROWS[:-1]
REPEATS = {
    "deploy_b1": 7,
    "deploy_b8": 5,
    "train_128": 5,
    "train_224": 5,
    "train_atto_demo": 7,
    "train_atto_fmnist": 7,
    "train_224_compile": 5,
}
QUICK_REPEATS = 3
WARMUP_CALLS = 2  # untimed calls per variant: the first compiles, the second runs compiled
TINY = ("sw", "slak", "convnext", "convnextv2")
SHIFTWISE_TINY = {"sw": "sw_tiny", "slak": "slak_tiny"}
TIMM_REFERENCES = {"convnext": "convnext_tiny", "convnextv2": "convnextv2_tiny"}
COMPILED_TRAINING = ("sw", "convnext")
ATTO = {"sw": "sw_atto", "slak": "slak_atto", "convnext": "convnext_atto"}
_TORCHVISION_SHIM: list[torch.library.Library] = []


@dataclasses.dataclass(frozen=True)
class Shape:
    """Input and head of one row: ``[batch, in_chans, image_size, image_size]`` images."""

    batch: int
    image_size: int
    in_chans: int = 3
    num_classes: int = 1000
    channels_last: bool = True
    label_smoothing: float = 0.0

    def images(self) -> torch.Tensor:
        """Seeded random images, channels-last when the row is."""
        generator = torch.Generator().manual_seed(self.batch * 1000 + self.image_size)
        x = torch.randn(
            self.batch, self.in_chans, self.image_size, self.image_size, generator=generator
        )
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def labels(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.batch)
        return torch.randint(0, self.num_classes, (self.batch,), generator=generator)


DEPLOY_SIZE = 224
TRAIN_ROWS = {  # row: (shape, the runtimes it times)
    "train_128": (Shape(8, 128), ("eager", "compile")),
    "train_224": (Shape(8, 224), ("eager",)),
    "train_224_compile": (Shape(8, 224), ("compile",)),
}
# shiftwise train's view of the two real-data runs (src/shiftwise/data, training/config.py RECIPES):
# bundled 64 px / Fashion-MNIST resized to 32 px, 1 channel (the CPU recipe has no RandAugment,
# which would need 3), the CPU recipe's batch 64 and label smoothing 0.1, width factor 0.5.
ATTO_WIDTH_FACTOR = 0.5
ATTO_SHAPES = {
    "train_atto_demo": Shape(
        64, 64, in_chans=1, num_classes=4, channels_last=False, label_smoothing=0.1
    ),
    "train_atto_fmnist": Shape(
        64, 32, in_chans=1, num_classes=10, channels_last=False, label_smoothing=0.1
    ),
}


def import_timm() -> Any:
    """The ``timm`` module, or None. First defines the two ``torchvision`` op schemas that
    timm's torchvision import needs next to a CPU torch (unless that namespace exists: a
    matching torchvision build, or the tests' shim)."""
    if not _TORCHVISION_SHIM:
        try:
            library = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _TORCHVISION_SHIM.append(library)
        except RuntimeError:
            pass
    try:
        import timm
    except (ImportError, RuntimeError):
        return None
    return timm


def tiny_model_labels() -> dict[str, str]:
    """What each model key of the T-size rows is (timm's references when timm imports)."""
    timm = import_timm()
    labels = {key: f"shiftwise {name}" for key, name in SHIFTWISE_TINY.items()}
    if timm is None:
        labels["convnext"] = "shiftwise convnext_tiny (timm not importable)"
    else:
        for key, name in TIMM_REFERENCES.items():
            labels[key] = f"timm {timm.__version__} {name}"
    return labels


def tiny_keys() -> tuple[str, ...]:
    """The T-size models measured: :data:`TINY`, less ConvNeXt V2-T when timm does not import."""
    return TINY if import_timm() is not None else tuple(k for k in TINY if k != "convnextv2")


def build_tiny(key: str) -> nn.Module:
    """The T-size model ``key`` of :func:`tiny_keys`, seeded random weights, 1000 classes."""
    torch.manual_seed(0)
    timm = import_timm()
    if key in TIMM_REFERENCES and timm is not None:
        return timm.create_model(TIMM_REFERENCES[key], pretrained=False)
    return shiftwise.create_model(SHIFTWISE_TINY.get(key, "convnext_tiny"))


def build_atto(key: str, shape: Shape) -> nn.Module:
    """The atto model ``key`` of :data:`ATTO` as ``shiftwise train`` builds it for ``shape``."""
    torch.manual_seed(0)
    return shiftwise.create_model(
        ATTO[key],
        num_classes=shape.num_classes,
        in_chans=shape.in_chans,
        width_factor=ATTO_WIDTH_FACTOR,
        drop_path_rate=0.0,
    )


def inference_call(model: Callable, x: torch.Tensor) -> Callable[[], object]:
    """One forward of ``model`` on ``x`` under no grad."""

    def call() -> object:
        with torch.no_grad():
            return model(x)

    return call


def training_call(
    model: nn.Module, shape: Shape, forward: Callable | None = None
) -> Callable[[], object]:
    """One training step of ``model`` (through ``forward``, e.g. its compiled form) on
    ``shape``'s images: cross-entropy, backward, AdamW step (its own optimizer, the fused
    kernel as ``shiftwise train`` uses it, for every model and checkout alike)."""
    forward = model if forward is None else forward  # (a compiled module has no bool)
    x, labels = shape.images(), shape.labels()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> object:
        smoothing = shape.label_smoothing
        loss = nn.functional.cross_entropy(forward(x), labels, label_smoothing=smoothing)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return None

    return step


def prepare(
    builders: dict[str, Callable[[], Callable[[], object]]],
) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """Build each variant and call it :data:`WARMUP_CALLS` times; a variant that fails
    (e.g. a compiler error on one checkout) is left out and its error returned instead."""
    variants, errors = {}, {}
    for name, build in builders.items():
        logger.info("  preparing %s", name)
        begin = time.perf_counter()
        try:
            call = build()
            for _ in range(WARMUP_CALLS):
                call()
        except Exception as error:  # one broken variant must not end the run
            errors[name] = _error_text(error)
            logger.warning("  %s failed, left out: %s", name, errors[name].splitlines()[0])
            continue
        variants[name] = call
        logger.info("  %s ready (%.0f s)", name, time.perf_counter() - begin)
    return variants, errors


def time_row(
    builders: dict[str, Callable[[], Callable[[], object]]], shape: Shape, repeats: int
) -> dict[str, Any]:
    """Prepare and time ``builders`` interleaved; step times, img/s, ratios and errors."""
    variants, errors = prepare(builders)
    record: dict[str, Any] = {"shape": dataclasses.asdict(shape), "repeats": repeats}
    record["errors"] = errors
    logger.info("  timing %d variants x %d rounds", len(variants), repeats)
    stats = {}
    with recording_other_cpu(record):
        if variants:  # none: every variant failed, or the row's runtimes were not asked for
            stats = measure_interleaved(variants, torch.device("cpu"), repeats=repeats, warmup=0)
    record["step"] = {name: stat.to_dict() for name, stat in stats.items()}
    record["images_per_s"] = {name: shape.batch / stat.median for name, stat in stats.items()}
    record["ratios"] = pairwise_ratios(stats)
    return record


class DeployForms:
    """Each T-size model's deploy form (eval, ``shiftwise.reparameterize``, channels-last) in
    the three runtimes, made once and shared by the deploy rows."""

    def __init__(self, keys: Iterable[str], folder: Path, threads: int) -> None:
        self.folder, self.threads = folder, threads
        self.modules = {
            key: shiftwise.reparameterize(build_tiny(key).eval()).to(
                memory_format=torch.channels_last
            )
            for key in keys
        }
        self.compiled: dict[str, Callable] = {}
        self.sessions: dict[str, Any] = {}

    def call(self, runtime: str, key: str, x: torch.Tensor) -> Callable[[], object]:
        """One inference of model ``key`` on ``x`` in ``runtime`` (compiles or exports the
        first time a runtime needs the model)."""
        module = self.modules[key]
        if runtime == "eager":
            return inference_call(module, x)
        if runtime == "compile":
            if key not in self.compiled:
                self.compiled[key] = torch.compile(module)
            return inference_call(self.compiled[key], x)
        session = self._session(key)
        feed = {session.get_inputs()[0].name: x.contiguous().numpy()}
        return lambda: session.run(None, feed)

    def _session(self, key: str) -> Any:
        """An onnxruntime session of model ``key``'s ONNX export (dynamic batch)."""
        if key not in self.sessions:
            from shiftwise.deploy.export import export_onnx, onnxruntime_session

            plain = copy.deepcopy(self.modules[key]).to(memory_format=torch.contiguous_format)
            example = torch.randn(1, 3, DEPLOY_SIZE, DEPLOY_SIZE)
            path = export_onnx(plain, self.folder / f"{key}.onnx", example)
            self.sessions[key] = onnxruntime_session(path, self.threads)
        return self.sessions[key]


def measure_deploy(
    rows: list[str],
    runtimes: list[str],
    repeats: dict[str, int],
    threads: int,
    done: Callable[[str, dict[str, Any]], None],
) -> None:
    """The deploy rows of ``rows``; each finished row goes to ``done(row, record)``."""
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as folder:
        record = begin_row()  # the first row also pays for building the models
        forms = DeployForms(tiny_keys(), Path(folder), threads)
        for row in rows:
            shape = Shape(int(row.removeprefix("deploy_b")), DEPLOY_SIZE)
            logger.info("%s: deploy %d px, batch %d", row, shape.image_size, shape.batch)
            x = shape.images()
            builders = {
                variant(runtime, key): functools.partial(forms.call, runtime, key, x)
                for runtime in runtimes
                for key in forms.modules
            }
            record |= time_row(builders, shape, repeats[row])
            done(row, record)
            record = begin_row()


def compiled_training_call(model: nn.Module, shape: Shape) -> Callable[[], object]:
    """:func:`training_call` through ``torch.compile(model)`` (loss, backward, AdamW eager)."""
    return training_call(model, shape, torch.compile(model))


def measure_training(row: str, runtimes: list[str], repeats: int) -> dict[str, Any]:
    """A T-size training-step row of :data:`TRAIN_ROWS`, in its runtimes among ``runtimes``
    (compiled: the models of :data:`COMPILED_TRAINING` only)."""
    shape, row_runtimes = TRAIN_ROWS[row]
    record = begin_row()
    logger.info("%s: training step %d px, batch %d", row, shape.image_size, shape.batch)
    wanted = [
        (runtime, key)
        for runtime in row_runtimes
        if runtime in runtimes
        for key in tiny_keys()
        if runtime == "eager" or key in COMPILED_TRAINING
    ]
    models = {
        key: build_tiny(key).train().to(memory_format=torch.channels_last)
        for key in dict.fromkeys(key for _, key in wanted)
    }
    step = {"eager": training_call, "compile": compiled_training_call}
    builders = {
        variant(runtime, key): functools.partial(step[runtime], models[key], shape)
        for runtime, key in wanted
    }
    record |= time_row(builders, shape, repeats)
    return record


def atto_training_call(key: str, shape: Shape) -> Callable[[], object]:
    """The training step of atto model ``key`` on ``shape``, weights in the input's layout."""
    layout = torch.channels_last if shape.channels_last else torch.contiguous_format
    return training_call(build_atto(key, shape).train().to(memory_format=layout), shape)


def measure_atto(row: str, repeats: int, channels_last: bool) -> dict[str, Any]:
    """An atto training-step row at the demo's or the Fashion-MNIST run's shapes (eager)."""
    shape = ATTO_SHAPES[row]
    if channels_last:
        shape = dataclasses.replace(shape, channels_last=True)
    record = begin_row()
    logger.info("%s: atto training step %d px, batch %d", row, shape.image_size, shape.batch)
    builders = {
        variant("eager", key): functools.partial(atto_training_call, key, shape) for key in ATTO
    }
    record |= time_row(builders, shape, repeats)
    record["models"] = {key: f"shiftwise {name}" for key, name in ATTO.items()}
    record["width_factor"] = ATTO_WIDTH_FACTOR
    return record


def memory_child(key: str, threads: int) -> None:
    """In a fresh process: print the peak training memory of ``key`` as one JSON line."""
    torch.set_num_threads(threads)
    import_timm()  # in both children, so that neither counts the import
    baseline = _status_bytes("VmRSS")
    shape = Shape(8, 224)
    model = build_tiny(key).train().to(memory_format=torch.channels_last)
    step = training_call(model, shape)
    step()  # first step: creates the AdamW state
    step_peak = peak_memory(step, torch.device("cpu"))
    process_peak = _status_bytes("VmHWM") - baseline
    print(json.dumps({"process_peak_bytes": process_peak, "step_peak_bytes": step_peak}))


def measure_memory(threads: int) -> dict[str, Any]:
    """Peak training memory of SW-T and ConvNeXt-T (224 px, batch 8), one subprocess each."""
    record = begin_row()
    logger.info("train_memory: peak training memory 224 px, batch 8")
    record["errors"], record["ratios"] = {}, {}
    with recording_other_cpu(record):
        for key in ("sw", "convnext"):
            command = [sys.executable, __file__, "--memory-child", key, "--threads", str(threads)]
            child = subprocess.run(command, capture_output=True, text=True)
            if child.returncode != 0:
                record["errors"][key] = child.stderr[-1000:]
                logger.warning("  memory of %s failed: %s", key, child.stderr.strip()[-200:])
                continue
            record[key] = json.loads(child.stdout.strip().splitlines()[-1])
    if not record["errors"]:
        ratio = record["sw"]["process_peak_bytes"] / record["convnext"]["process_peak_bytes"]
        record["ratios"]["memory:sw/convnext"] = {"median": ratio}
    return record


def _status_bytes(field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM``) of ``/proc/self/status`` in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:1000]


def begin_row() -> dict[str, Any]:
    """A row's record, opened with the load average and the wall clock at its start."""
    return {"load_average_before": load_average(), "start_time": time.time()}


def allow_recompiles(limit: int = 64) -> None:
    """Let dynamo compile one code object ``limit`` times (default 8): the models of one
    family share their ``forward``, and each model, batch size and mode is a compilation;
    past the limit dynamo would silently run eager."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, limit)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Rounds per row and runtimes from the command line (``--quick``: 3 rounds, no compile
    unless ``--runtimes`` asks for it)."""
    rounds = args.repeats or (QUICK_REPEATS if args.quick else None)
    runtimes = args.runtimes or [r for r in RUNTIMES if not (args.quick and r == "compile")]
    return {
        "rows": [row for row in ROWS if row in args.rows],
        "runtimes": runtimes,
        "repeats": {row: rounds or default for row, default in REPEATS.items()},
        "quick": args.quick,
        "atto_channels_last": args.atto_channels_last,
        "load_threshold": LOAD_THRESHOLD,
    }


def environment(threads: int) -> dict[str, Any]:
    """:func:`describe_environment` plus what says which code and libraries were measured."""
    info = describe_environment(torch.device("cpu"))
    info["shiftwise_file"] = shiftwise.__file__
    info["threads"] = threads
    info["script"] = str(Path(__file__).resolve())
    timm = import_timm()
    info["timm"] = None if timm is None else timm.__version__
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the selected rows; the JSON is rewritten after each row."""
    torch.set_num_threads(args.threads)
    allow_recompiles()
    payload: dict[str, Any] = {
        "environment": environment(args.threads),
        "settings": settings(args),
        "models": tiny_model_labels(),
        "rows": {},
        "warnings": start_warnings(load_average()),
    }
    config = payload["settings"]
    for warning in payload["warnings"]:
        logger.warning(warning)

    def done(row: str, record: dict[str, Any]) -> None:
        record["load_average_after"] = load_average()
        record["seconds"] = round(time.time() - record["start_time"], 1)
        for warning in load_warnings(row, record):
            logger.warning(warning)
            payload["warnings"].append(warning)
        payload["rows"][row] = record
        write_json(args.out / f"{args.name}.json", payload)
        torch._dynamo.reset()  # free the row's compiled graphs
        gc.collect()

    rows = config["rows"]
    deploy_rows = [row for row in rows if row.startswith("deploy_")]
    if deploy_rows:
        measure_deploy(deploy_rows, config["runtimes"], config["repeats"], args.threads, done)
    for row in rows:
        if row in TRAIN_ROWS:
            done(row, measure_training(row, config["runtimes"], config["repeats"][row]))
        elif row in ATTO_SHAPES:
            done(row, measure_atto(row, config["repeats"][row], args.atto_channels_last))
        elif row == "train_memory":
            done(row, measure_memory(args.threads))
    return payload


def compare(before: Path, after: Path, out: Path) -> str:
    """The markdown targets table of two runs' JSON; written to ``out/targets_compare.md``
    (and ``.png``)."""
    runs = [
        (name, json.loads(path.read_text()))
        for name, path in (("before", before), ("after", after))
    ]
    table = render_table(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "targets_compare.md").write_text(table)
    plot(runs, out / "targets_compare.png")
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=ROWS,
        default=list(DEFAULT_ROWS),
        help="default: all but train_224_compile",
    )
    parser.add_argument(
        "--runtimes",
        nargs="+",
        choices=RUNTIMES,
        default=None,
        help="deploy and training runtimes (default all; --quick: no compile)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"timed rounds of every row (default {REPEATS})"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_REPEATS} rounds per row, no torch.compile"
    )
    parser.add_argument(
        "--atto-channels-last",
        action="store_true",
        help="time the atto rows channels-last (default: the trainer's NCHW)",
    )
    parser.add_argument("--name", default="targets", help="output file stem")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("BEFORE", "AFTER"),
        help="render the targets table of two runs' JSON instead of measuring",
    )
    parser.add_argument("--memory-child", choices=("sw", "convnext"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats: expected an integer >= 1, got {args.repeats}")
    if args.threads < 1:
        parser.error(f"--threads: expected an integer >= 1, got {args.threads}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.threads)
        return
    # progress from this script; the exporter's and compiler's INFO chatter stays off
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    if args.compare:
        print(compare(*args.compare, args.out), end="")
        return
    payload = run(args)
    plot([(args.name, payload)], args.out / f"{args.name}.png")
    print(render_table([(args.name, payload)]), end="")
    print(f"-> {args.out / f'{args.name}.json'}, {args.out / f'{args.name}.png'}")


if __name__ == "__main__":
    main()
