"""``shiftwise convert``: official SLaK / ShiftwiseConv checkpoints to our safetensors.

The official state_dict keys (listed in the reference ``official_*_state_dict.tsv``) are
renamed to ours, every shape is checked against a freshly built model, and the result is
written atomically. Renames (``s`` stage, ``b`` block, ``i >= 1``):

* ``downsample_layers.0.*`` -> ``stem.*``; ``downsample_layers.{i}.*`` ->
  ``stages.{i}.downsample.*``; ``stages.{s}.{b}.*`` -> ``stages.{s}.blocks.{b}.*``;
  ``norm.*`` -> ``head.norm.*``; ``head.*`` -> ``head.fc.*``.
* SW blocks: ``large_kernel.LoRAs.{p}`` -> ``conv_dw.paths.{p}`` (a merged file's
  ``large_kernel.LoRA`` -> ``conv_dw.paths.0``, built with one path);
  ``large_kernel.bn_lora1 / bn_lora2 / bn_small`` -> ``conv_dw.bn_h / bn_v / bn_identity``;
  ``pwconv1.1`` -> ``fc1``; ``act.1`` -> ``grn``; ``pwconv2.0`` -> ``fc2``;
  ``pwconv2.2`` -> ``norm2``; ``gamma``, ``norm``, ``se.down``, ``se.up`` unchanged.
* SLaK blocks: ``large_kernel.LoRA1 / LoRA2 / small_conv`` -> ``conv_dw.tall / wide / small``
  (each with ``.conv`` and ``.bn``); ``pwconv1`` -> ``fc1``; ``pwconv2`` -> ``fc2``;
  ``gamma``, ``norm`` unchanged.

The ShiftwiseConv ghost split and shift tables are not in official checkpoints (the official
code regenerates them with seed 123); ours are buffers, taken from a freshly built model with
the default seed 123, which reproduces the official tables. The official channel order
(rep channels, then ghost channels) is kept, so the converted network computes what the
official one computes.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from shiftwise.errors import MissingFileError, UsageError
from shiftwise.io import check_output_not_input, check_state_dict, safe_torch_load, save_weights
from shiftwise.layers import LargeKernelOperator
from shiftwise.models import MODEL_CONFIGS, create_model
from shiftwise.models.registry import FAMILIES

__all__ = [
    "SOURCES",
    "convert_checkpoint",
    "convert_state_dict",
    "infer_model_name",
    "map_key",
    "model_kwargs",
    "read_official_checkpoint",
    "register",
    "run",
]

logger = logging.getLogger(__name__)

SOURCES = tuple(sorted(name for name, family in FAMILIES.items() if family.official_block_keys))


def map_key(key: str, source: str) -> str | None:
    """Our name of the official ``key`` of a ``source`` ("slak"/"sw") model, or ``None``."""
    if source not in SOURCES:
        raise UsageError(f"source: expected one of {SOURCES}, got {source!r}")
    if match := re.fullmatch(r"downsample_layers\.0\.(.+)", key):
        return f"stem.{match[1]}"
    if match := re.fullmatch(r"downsample_layers\.(\d+)\.(.+)", key):
        return f"stages.{match[1]}.downsample.{match[2]}"
    if match := re.fullmatch(r"(norm|head)\.(weight|bias)", key):
        return f"head.{'norm' if match[1] == 'norm' else 'fc'}.{match[2]}"
    if match := re.fullmatch(r"stages\.(\d+)\.(\d+)\.(.+)", key):
        rest = match[3]
        for pattern, replacement in FAMILIES[source].official_block_keys:
            if re.match(pattern, rest):
                renamed = re.sub(pattern, replacement, rest, count=1)
                return f"stages.{match[1]}.blocks.{match[2]}.{renamed}"
    return None


def constructed_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``{name: buffer}`` of what the model's operators draw at construction instead of
    learning (:meth:`~shiftwise.layers.LargeKernelOperator.constructed_buffers`, e.g. SW's
    ghost split and shift tables), which official checkpoints do not hold."""
    found = {}
    for module_name, module in model.named_modules():
        if isinstance(module, LargeKernelOperator):
            for name in module.constructed_buffers():
                found[f"{module_name}.{name}"] = module.get_buffer(name)
    return found


def read_official_checkpoint(path: str | Path, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model state_dict of an official checkpoint file, ``module.`` prefixes stripped.

    Loaded with ``torch.load(weights_only=True)`` and the allow-list of
    :data:`shiftwise.io.SAFE_GLOBALS` (official files also pickle their argparse ``args``);
    a file needing any other global is refused (:class:`~shiftwise.errors.UnsafeFileError`).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"IN: no checkpoint file at {str(path)!r}")
    checkpoint = safe_torch_load(path, "IN")
    keys = ("model_ema", "model", "state_dict") if use_ema else ("model", "state_dict", "model_ema")
    if isinstance(checkpoint, Mapping):
        for key in keys:
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        raise UsageError(f"IN: {str(path)!r} holds no state_dict (looked for {keys} or a flat one)")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def _stage_layout(state_dict: Mapping[str, torch.Tensor]) -> tuple[list[int], list[int]]:
    depths, dims = [0] * 4, [0] * 4
    for key, value in state_dict.items():
        if match := re.fullmatch(r"stages\.(\d)\.(\d+)\.gamma", key):
            stage, block = int(match[1]), int(match[2])
            depths[stage] = max(depths[stage], block + 1)
            dims[stage] = value.shape[0]
    return depths, dims


def infer_model_name(state_dict: Mapping[str, torch.Tensor], source: str) -> str:
    """The registered ``source`` model whose depths and widths match the official weights."""
    depths, dims = _stage_layout(state_dict)
    for name, config in MODEL_CONFIGS.items():
        widths = [int(d * config.width_factor) for d in config.dims]
        if config.family == source and list(config.depths) == depths and widths == dims:
            return name
    raise UsageError(
        f"--model: no registered {source} model has depths {depths} and widths {dims}; "
        "name one with --model"
    )


def convert_state_dict(
    official: Mapping[str, torch.Tensor], source: str, model_name: str | None = None
) -> tuple[str, dict[str, torch.Tensor]]:
    """Rename and check ``official`` weights; returns ``(model name, our state_dict)``.

    Raises ``ValueError`` listing unknown official keys, and missing / unexpected keys and
    shape mismatches against the model built with the checkpoint's class count.
    """
    if source not in SOURCES:
        raise UsageError(f"--from: expected one of {SOURCES}, got {source!r}")
    unknown = [k for k in official if map_key(k, source) is None]
    if unknown:
        raise UsageError(
            f"IN: {len(unknown)} keys are not {source} checkpoint keys, e.g. {unknown[:5]} "
            "(wrong --from?)"
        )
    ours = {map_key(k, source): v for k, v in official.items()}
    name = model_name or infer_model_name(official, source)
    model = create_model(name, **model_kwargs(official))
    for key, value in constructed_buffers(model).items():
        ours.setdefault(key, value.clone())
    check_state_dict(model, ours, source=f"IN (as {name})")
    return name, ours


def model_kwargs(official: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The :func:`create_model` arguments official weights need besides the name: the class
    count, and one path per SW operator for a merged (``large_kernel.LoRA``) file."""
    head = official.get("head.weight")
    kwargs: dict[str, Any] = {"num_classes": int(head.shape[0]) if head is not None else 0}
    if any(re.search(r"large_kernel\.LoRA\.weight$", k) for k in official):
        kwargs["operator_kwargs"] = {"n_paths": 1}
    return kwargs


def convert_checkpoint(
    source: str,
    in_path: str | Path,
    out_path: str | Path,
    model_name: str | None = None,
    use_ema: bool = False,
) -> str:
    """Convert an official checkpoint file to our safetensors; returns the model name.

    ``out_path`` must not be ``in_path`` (the same file, also through a link): refused before
    anything is read.
    """
    check_output_not_input(out_path, [in_path], "OUT")
    official = read_official_checkpoint(in_path, use_ema)
    name, ours = convert_state_dict(official, source, model_name)
    save_weights(
        ours,
        out_path,
        model=name,
        model_kwargs=model_kwargs(official),
        metadata={"converted_from": source},
    )
    logger.info("wrote %s (%s, %d tensors)", out_path, name, len(ours))
    return name


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="official SLaK / ShiftwiseConv checkpoint to our safetensors"
    )
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES)
    parser.add_argument("input", metavar="IN", help="official checkpoint (.pth)")
    parser.add_argument("output", metavar="OUT", help="output .safetensors file")
    parser.add_argument("--model", default=None, help="our model name (default: inferred)")
    parser.add_argument("--ema", action="store_true", help="prefer the 'model_ema' weights")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    name = convert_checkpoint(args.source, args.input, args.output, args.model, args.ema)
    print(f"{args.output}: {name} (load with shiftwise.models.load_checkpoint)")
    return 0
