"""Model-level benchmarks: images per second and peak memory, train step and deploy inference.

* ``train``: one optimisation step in train mode -- forward, cross-entropy against fixed random
  labels, backward, AdamW step, gradients set to ``None``. The optimizer state exists after the
  warm-up, so the peak memory is what the step adds on top of weights, gradients and state.
* ``deploy``: a ``shiftwise.reparameterize``-d copy in eval mode, channels-last weights and
  input, forward under no grad.
* ``deploy_onnxruntime`` (runtime ``onnxruntime``): the same deploy form exported by
  :func:`shiftwise.deploy.export.export_onnx` (dynamic batch, fixed size) and run in an
  onnxruntime CPU session with all graph optimisations on (``ORT_ENABLE_ALL``), as many
  intra-op threads as torch uses and sequential execution. Needs the ``export`` extra.

Models of one mode are timed interleaved; ``ratio_to_baseline`` is the median of the
per-repeat throughput ratios against the baseline model (ConvNeXt-T). When both runtimes are
measured, the two deploy modes are timed interleaved together and each onnxruntime entry
also has ``throughput_ratio_to_torch`` (> 1: onnxruntime is faster).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shiftwise.analysis.timing import (
    Stats,
    measure_interleaved,
    paired_ratio,
    peak_memory,
)
from shiftwise.errors import UsageError
from shiftwise.models import create_model, reparameterize

__all__ = [
    "MODEL_MODES",
    "MODEL_NAMES",
    "RUNTIMES",
    "model_call",
    "onnxruntime_call",
    "run_model_suite",
]

MODEL_MODES = ("train", "deploy")
RUNTIMES = ("torch", "onnxruntime")
ORT_MODE = "deploy_onnxruntime"
MODEL_NAMES = ("sw_tiny", "slak_tiny", "convnext_tiny")
"""The models benchmarked by default (ratios against the last, ConvNeXt-T)."""


def model_call(model: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], object]:
    """A zero-argument callable running one ``mode`` step of ``model`` on ``x``."""
    if mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        num_classes = model.num_classes if getattr(model, "num_classes", 0) else 1000
        labels = torch.randint(0, num_classes, (x.shape[0],), device=x.device)

        def step() -> object:
            loss = nn.functional.cross_entropy(model(x), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return None

        return step
    if mode == "deploy":
        deployed = reparameterize(copy.deepcopy(model)).eval()
        deployed.to(memory_format=torch.channels_last)
        x_deploy = x.contiguous(memory_format=torch.channels_last)

        def infer() -> object:
            with torch.no_grad():
                return deployed(x_deploy)

        return infer
    raise UsageError(f"mode: expected one of {MODEL_MODES}, got {mode!r}")


def onnxruntime_call(
    model: nn.Module, x: torch.Tensor, folder: Path, threads: int | None = None
) -> Callable[[], object]:
    """A zero-argument callable running ``model``'s deploy form on ``x`` in onnxruntime.

    The deploy form is exported to ``folder/<class>.onnx`` first (CPU only); the session has
    ``threads`` intra-op threads (default: torch's).
    """
    from shiftwise.deploy.export import deploy_form, export_onnx, onnxruntime_session

    deployed = deploy_form(copy.deepcopy(model).cpu())
    path = export_onnx(deployed, folder / f"{id(model)}.onnx", x.cpu())
    session = onnxruntime_session(path, threads)
    feed = {session.get_inputs()[0].name: x.cpu().numpy()}
    return lambda: session.run(None, feed)


def run_model_suite(
    device: torch.device,
    names: Sequence[str] = MODEL_NAMES,
    baseline: str = "convnext_tiny",
    image_size: int = 224,
    batch: int = 1,
    modes: Sequence[str] = MODEL_MODES,
    repeats: int = 5,
    warmup: int = 1,
    model_kwargs: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    runtimes: Sequence[str] = ("torch",),
) -> dict[str, Any]:
    """Throughput (img/s) and peak memory of each model in each mode, ratios vs ``baseline``.

    ``model_kwargs`` go to every ``create_model`` call (e.g. smaller ``kernel_sizes`` for a
    smoke test). Train mode needs ``batch >= 2`` when the last stage map is 1x1 (BatchNorm).
    ``runtimes``: ``torch`` runs ``modes``; ``onnxruntime`` adds ``deploy_onnxruntime``
    (CPU only; see the module docstring).
    """
    if baseline not in names:
        raise UsageError(
            f"baseline: expected one of the benchmarked models {list(names)}, got {baseline!r}"
        )
    for runtime in runtimes:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime: expected one of {RUNTIMES}, got {runtime!r}")
    if "onnxruntime" in runtimes and device.type != "cpu":
        raise ValueError(f"runtime: onnxruntime is measured on CPU only, got device {device}")
    torch.manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    models = {name: create_model(name, **(model_kwargs or {})).to(device) for name in names}
    groups = [[mode] for mode in modes if "torch" in runtimes and mode != "deploy"]
    deploy_group = [mode for mode in modes if "torch" in runtimes and mode == "deploy"]
    if "onnxruntime" in runtimes:
        deploy_group.append(ORT_MODE)
    groups.append(deploy_group)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="shiftwise-bench-") as folder:
        for group in filter(None, groups):
            if progress is not None:
                progress(f"models {'+'.join(group)} {image_size}x{image_size} batch {batch}")
            calls = {
                (mode, name): _call(model, x, mode, Path(folder))
                for mode in group
                for name, model in models.items()
            }
            stats = measure_interleaved(calls, device, repeats=repeats, warmup=warmup)
            for mode in group:
                results[mode] = {
                    name: _entry(stats, calls, (mode, name), (mode, baseline), batch, device)
                    for name in names
                }
                if mode == ORT_MODE and "deploy" in group:
                    for name in names:
                        results[mode][name]["throughput_ratio_to_torch"] = paired_ratio(
                            stats["deploy", name], stats[mode, name]
                        )
            del calls
    return {
        "image_size": image_size,
        "batch": batch,
        "baseline": baseline,
        "threads": torch.get_num_threads(),
        "runtimes": list(runtimes),
        "model_kwargs": {key: repr(value) for key, value in (model_kwargs or {}).items()},
        "parameters": {
            name: sum(p.numel() for p in model.parameters()) for name, model in models.items()
        },
        "modes": results,
    }


def _call(model: nn.Module, x: torch.Tensor, mode: str, folder: Path) -> Callable[[], object]:
    if mode == ORT_MODE:
        return onnxruntime_call(model, x, folder)
    return model_call(model, x, mode)


def _entry(
    stats: dict[Any, Stats],
    calls: dict[Any, Callable[[], object]],
    key: tuple[str, str],
    baseline: tuple[str, str],
    batch: int,
    device: torch.device,
) -> dict[str, Any]:
    """Step time, img/s (median and quartiles), peak memory and ratio vs the baseline."""
    step = stats[key]
    return {
        "step": step.to_dict(),
        "images_per_s": {
            "median": batch / step.median,
            "q1": batch / step.quartiles[1],
            "q3": batch / step.quartiles[0],
        },
        "peak_memory_bytes": peak_memory(calls[key], device),
        "throughput_ratio_to_baseline": paired_ratio(stats[baseline], step),
    }
