"""Model-level benchmarks: images per second and peak memory, train step and deploy inference.

* ``train``: one optimisation step in train mode -- forward, cross-entropy against fixed random
  labels, backward, AdamW step, gradients set to ``None``. The optimizer state exists after the
  warm-up, so the peak memory is what the step adds on top of weights, gradients and state.
* ``deploy``: a ``shiftwise.reparameterize``-d copy in eval mode, channels-last weights and
  input, forward under no grad.

Models of one mode are timed interleaved; ``ratio_to_baseline`` is the median of the
per-repeat throughput ratios against the baseline model (ConvNeXt-T).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from shiftwise.errors import UsageError
from shiftwise.models import create_model, reparameterize
from shiftwise.tools.benchmarking.timing import measure_interleaved, paired_ratio, peak_memory

__all__ = ["MODEL_MODES", "model_call", "run_model_suite"]

MODEL_MODES = ("train", "deploy")


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


def run_model_suite(
    device: torch.device,
    names: Sequence[str] = ("sw_tiny", "slak_tiny", "convnext_tiny"),
    baseline: str = "convnext_tiny",
    image_size: int = 224,
    batch: int = 1,
    modes: Sequence[str] = MODEL_MODES,
    repeats: int = 5,
    warmup: int = 1,
    model_kwargs: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Throughput (img/s) and peak memory of each model in each mode, ratios vs ``baseline``.

    ``model_kwargs`` go to every ``create_model`` call (e.g. smaller ``kernel_sizes`` for a
    smoke test). Train mode needs ``batch >= 2`` when the last stage map is 1x1 (BatchNorm).
    """
    if baseline not in names:
        raise UsageError(
            f"baseline: expected one of the benchmarked models {list(names)}, got {baseline!r}"
        )
    torch.manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    models = {name: create_model(name, **(model_kwargs or {})).to(device) for name in names}
    results: dict[str, Any] = {}
    for mode in modes:
        if progress is not None:
            progress(f"models {mode} {image_size}x{image_size} batch {batch}")
        calls = {name: model_call(model, x, mode) for name, model in models.items()}
        stats = measure_interleaved(calls, device, repeats=repeats, warmup=warmup)
        entry: dict[str, Any] = {}
        for name in names:
            speed = {
                "median": batch / stats[name].median,
                "q1": batch / stats[name].quartiles[1],
                "q3": batch / stats[name].quartiles[0],
            }
            entry[name] = {
                "step": stats[name].to_dict(),
                "images_per_s": speed,
                "peak_memory_bytes": peak_memory(calls[name], device),
                "throughput_ratio_to_baseline": paired_ratio(stats[baseline], stats[name]),
            }
        results[mode] = entry
        del calls
    return {
        "image_size": image_size,
        "batch": batch,
        "baseline": baseline,
        "model_kwargs": {key: repr(value) for key, value in (model_kwargs or {}).items()},
        "parameters": {
            name: sum(p.numel() for p in model.parameters()) for name, model in models.items()
        },
        "modes": results,
    }
