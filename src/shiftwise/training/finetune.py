"""Fine-tuning: start weights from a file, classifier reset, layer-wise lr decay, the recipe.

What ``shiftwise train --finetune PATH`` needs, as library pieces:

* :func:`load_start_weights` loads any weights file shiftwise reads (its own
  ``model.safetensors``, a ``shiftwise convert`` output of an official SLaK / ShiftwiseConv
  checkpoint, a ``checkpoint.pt`` or a run directory, resolved as ``shiftwise eval`` resolves
  it: the newest resume point that verifies, whose weights are the run's last) into a built
  model. Every tensor must load except the classifier ``head.fc``, which is re-initialised
  (one log line) when the file's class count differs from the model's, and scaled by
  ``head_init_scale`` as the official ConvNeXt / SLaK ``--head_init_scale`` does.
* :func:`layer_decay_param_groups`: AdamW parameter groups with layer-wise learning-rate decay
  from the model's ``group_matcher`` (timm's ``param_groups_layer_decay``), with the weight
  decay rule of :func:`shiftwise.training.optimization.param_groups`.
* The official ConvNeXt fine-tuning settings are the recipe ``finetune``
  (:data:`shiftwise.training.config.FINETUNE`, cited there).

Sparse weights files (a ``--sparse`` run's) hold the dense tensors with the pruned entries
stored as zeros; the masks live in the run's ``checkpoint.pt``, not in the weights. They load
like any other file, as values: a dense fine-tune trains every weight (the pruned ones start
from zero and regrow), a sparse fine-tune draws its own masks with its ``sparse_init``; the
source run's masks are not carried over.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shiftwise.errors import CheckpointError, UsageError
from shiftwise.io import check_state_dict, read_weights

__all__ = [
    "CLASSIFIER",
    "StartWeights",
    "layer_decay_param_groups",
    "layer_ids",
    "load_start_weights",
]

logger = logging.getLogger(__name__)

# The classifier's module name in every MacroNet (its pretrained_cfg "classifier").
CLASSIFIER = "head.fc"


@dataclass(frozen=True)
class StartWeights:
    """What :func:`load_start_weights` loaded.

    Attributes:
        path: the file or directory given.
        model: the model name the file records (``None`` for a file that records none).
        file_classes: the class count of the file's classifier (0: it has none).
        head_reset: whether the model's classifier was re-initialised instead of loaded.
        metadata: the file's metadata (``image_size``, ``data``, ``converted_from``...).
    """

    path: Path
    model: str | None
    file_classes: int
    head_reset: bool
    metadata: Mapping[str, str]


def _classes(tensors: Mapping[str, torch.Tensor]) -> int:
    weight = tensors.get(f"{CLASSIFIER}.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else 0


def load_start_weights(
    model: nn.Module,
    path: str | os.PathLike,
    weights: str = "model",
    head_init_scale: float = 1.0,
    flag: str = "--finetune",
) -> StartWeights:
    """Load the weights at ``path`` into ``model`` (a :class:`~shiftwise.models.MacroNet`) to
    start a fine-tuning run.

    Args:
        model: the model to train, built with its own class count.
        path: a weights file, ``checkpoint.pt`` or run directory (:func:`read_weights`).
        weights: ``"model"`` or ``"ema"`` (the official ``--model_key model_ema``).
        head_init_scale: factor on the re-initialised classifier's weight and bias (only when
            it is re-initialised: a loaded classifier is kept as it is).
        flag: the option named in errors and the log line.

    The classifier ``head.fc`` is re-initialised (truncated normal std 0.02, zero bias, times
    ``head_init_scale``) when the file's class count differs from the model's; every other
    tensor must be in the file with the model's shape. Raises :class:`MissingFileError`, or one
    :class:`CheckpointError` for re-parameterised (deployed) weights, weights recorded for
    another model, or naming the missing / unexpected keys and shape mismatches.
    """
    if not (isinstance(head_init_scale, int | float) and math.isfinite(head_init_scale)):
        raise UsageError(f"head_init_scale: expected a finite number, got {head_init_scale!r}")
    path = Path(path)
    if path.name.endswith((".pth", ".pth.tar", ".bin")) and path.is_file():
        raise CheckpointError(
            f"{flag}: {str(path)!r} is not a shiftwise weights file; convert an official "
            "checkpoint first with `shiftwise convert --from sw|slak IN OUT.safetensors`"
        )
    tensors, metadata = read_weights(path, weights, flag)
    if metadata.get("form") == "deployed":
        raise CheckpointError(
            f"{flag}: {str(path)!r} holds re-parameterised (deployed) weights, which cannot be "
            "trained; fine-tune from the training-form file it was made from"
        )
    recorded = metadata.get("model")
    architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if recorded and architecture and recorded != architecture:
        raise CheckpointError(
            f"{flag}: {str(path)!r} holds weights for model {recorded!r}, not {architecture!r}"
        )
    expected = model.state_dict()
    head = [key for key in expected if key.startswith(f"{CLASSIFIER}.")]
    file_head = [key for key in tensors if key.startswith(f"{CLASSIFIER}.")]
    file_classes = _classes(tensors)
    model_classes = int(getattr(model, "num_classes", _classes(expected)))
    head_reset = file_classes != model_classes
    candidate = dict(tensors)
    if head_reset:
        for key in file_head:
            del candidate[key]
        model.reset_classifier(model_classes)
        fc = model.get_classifier()
        if isinstance(fc, nn.Linear):
            with torch.no_grad():
                fc.weight.mul_(head_init_scale)
                fc.bias.mul_(head_init_scale)
        expected = model.state_dict()
        candidate.update({key: expected[key] for key in head})
    check_state_dict(model, candidate, source=f"{flag} {str(path)!r}")
    model.load_state_dict(candidate, strict=True)
    if head_reset:
        logger.info(
            "%s: %s has a %d-class classifier, the model %d classes: %s re-initialised "
            "(head init scale %g), every other tensor loaded",
            flag,
            path,
            file_classes,
            model_classes,
            CLASSIFIER,
            head_init_scale,
        )
    return StartWeights(path, recorded, file_classes, head_reset, dict(metadata))


# ---------------------------------------------------------------------------------------------
# Layer-wise learning-rate decay


def _ordinals(name: str, matchers: list[tuple[re.Pattern, tuple[float, ...]]]) -> tuple:
    """timm's group ordinal of parameter ``name``: the matcher's group number, the regex's
    numbers, then the matcher's suffix; ``(inf,)`` for an unmatched name (the head)."""
    for pattern, prefix, suffix in matchers:
        match = pattern.match(name)
        if match:
            numbers = tuple(float(group) for group in match.groups() if group is not None)
            return (*prefix, *numbers, *suffix)
    return (math.inf,)


# timm's suffix that joins a match to the group before it (``MATCH_PREV_GROUP``).
_JOIN_PREVIOUS = 99999.0


def layer_ids(model: nn.Module) -> dict[str, int]:
    """``{parameter name: layer id}`` from ``model.group_matcher(coarse=False)``, as timm's
    ``group_parameters(..., reverse=True)``: the names are sorted by their matchers' ordinals
    (group order, then the numbers captured by the regex, then the suffix), each distinct
    ordinal is one layer (one ending in 99999 joins the layer before), unmatched names (the
    head) are the last layer. For our networks: the stem is layer 0, then one layer per block
    in network order (a stage's downsample joins its first block), then the head."""
    if not hasattr(model, "group_matcher"):
        raise UsageError(
            f"layer_decay: {type(model).__name__} has no group_matcher to group its layers by"
        )
    matchers = []
    for index, spec in enumerate(model.group_matcher(coarse=False).values()):
        entries = spec if isinstance(spec, list | tuple) else [(spec, None)]
        for regex, suffix in entries:
            matchers.append((re.compile(regex), (float(index),), tuple(map(float, suffix or ()))))
    ordinals = {name: _ordinals(name, matchers) for name, _ in model.named_parameters()}
    layer, ids = -1, {}
    for ordinal in sorted(set(ordinals.values())):
        if layer < 0 or ordinal[-1] != _JOIN_PREVIOUS:
            layer += 1
        ids[ordinal] = layer
    return {name: ids[ordinal] for name, ordinal in ordinals.items()}


def layer_decay_param_groups(
    model: nn.Module, weight_decay: float, layer_decay: float, lr: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning-rate decay.

    Layer ``i`` of ``n`` (:func:`layer_ids`) trains at ``lr * layer_decay ** (n - 1 - i)``:
    the head at ``lr``, each layer below it ``layer_decay`` times slower. Within a layer, the
    weights of :func:`shiftwise.training.optimization.param_groups` get ``weight_decay``
    (``>= 2``-D, not in ``model.no_weight_decay()``), the others none. Each group has
    ``params``, ``weight_decay``, ``lr`` and ``lr_scale`` (timm's key: a scheduler that sets
    ``lr = value * lr_scale`` and one scaling each group's initial ``lr`` give the same
    rates); frozen parameters are left out. The groups suit ``torch.optim.AdamW`` with
    ``fused=True``, which takes per-group learning rates and weight decays.

    This is timm's grouping (one layer per block, ``2 + sum(depths)`` layers), finer than the
    official ConvNeXt / SLaK ``optim_factory.py`` (14 fixed layer ids: stage 2's blocks in
    threes, stage 3 with the last downsample), so the same ``layer_decay`` slows the early
    layers more: the stem of a ``[3, 3, 9, 3]`` network trains at ``0.8 ** 19`` of the head's
    rate here, ``0.8 ** 13`` there.
    """
    if not (isinstance(layer_decay, int | float) and 0 < layer_decay <= 1):
        raise UsageError(f"layer_decay: expected a value in (0, 1], got {layer_decay!r}")
    ids = layer_ids(model)
    top = max(ids.values())
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim > 1 and name not in skip
        layer = ids[name]
        if (layer, decay) not in groups:
            scale = layer_decay ** (top - layer)
            groups[layer, decay] = {
                "params": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr": lr * scale,
                "lr_scale": scale,
            }
        groups[layer, decay]["params"].append(param)
    return [groups[key] for key in sorted(groups)]
