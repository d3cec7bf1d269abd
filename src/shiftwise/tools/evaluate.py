"""``shiftwise eval``: top-1/top-5 of a checkpoint on a data set, optionally re-parameterised
(scored by :func:`shiftwise.training.evaluation.evaluate_model`, as after every training epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

import torch

from shiftwise.data import BatchTransform, load_data
from shiftwise.data.datasets import ImageFolderDataset
from shiftwise.devices import check_device
from shiftwise.errors import UsageError
from shiftwise.inference import eval_settings
from shiftwise.models.registry import check_image_size
from shiftwise.models.weights import model_from_weights, recorded_int
from shiftwise.training.evaluation import evaluate_model, val_loader

__all__ = ["evaluate_checkpoint", "register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="top-1/top-5 of a checkpoint",
        description="Evaluate a checkpoint (checkpoint.pt, weights-*.safetensors or "
        "model.safetensors written by `shiftwise train`) on a data set.",
    )
    parser.add_argument("--model", default=None, help="model name (default: the file's)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint or weights file")
    parser.add_argument(
        "--data",
        default="bundled",
        help="bundled (default), fashion-mnist, digits or an ImageFolder root (uses val/)",
    )
    parser.add_argument("--data-dir", default=None, help="cache directory of the bundled set")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side in pixels (default: the one the weights record)",
    )
    parser.add_argument(
        "--crop-pct",
        type=float,
        default=None,
        help="ImageFolder data: resize the shorter side to image-size / crop-pct, then crop "
        "the centre (default: the model's pretrained_cfg, 0.875 for the 224 px models)",
    )
    parser.add_argument("--weights", choices=("model", "ema"), default="model")
    parser.add_argument("--reparam", action="store_true", help="re-parameterise first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="first N validation images")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: best)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels-last weights (default: on; the blocks compute channels-last)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, float]:
    """Rebuild the model of ``args.checkpoint`` and evaluate it on ``args.data``; returns
    ``{"model", "top1", "top5", "loss", "count"}`` (and ``"image_size"``, ``"crop_pct"`` for
    ImageFolder data, whose validation images get the model's evaluation crop)."""
    from shiftwise.models import reparameterize

    for name in ("batch_size", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {value}")
    if args.workers < 0:
        raise UsageError(f"--workers: expected an integer >= 0, got {args.workers}")
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise UsageError(f"--crop-pct: expected a number in (0, 1], got {args.crop_pct}")
    device = check_device(args.device, "--device")
    bundle = load_data(args.data, image_size=args.image_size, data_dir=args.data_dir)
    folder = isinstance(bundle.val, ImageFolderDataset)
    if args.crop_pct is not None and not folder:
        raise UsageError(f"--crop-pct: applies to ImageFolder data; {args.data!r} is resized whole")
    model, metadata = model_from_weights(
        args.checkpoint,
        args.model,
        args.weights,
        flag="--checkpoint",
        defaults={"num_classes": bundle.num_classes, "in_chans": bundle.in_chans},
    )
    if args.image_size is not None:
        check_image_size(model, args.image_size, "--image-size")
    classes = recorded_int(
        metadata, "num_classes", bundle.num_classes, args.checkpoint, "--checkpoint"
    )
    if classes != bundle.num_classes:
        raise UsageError(
            f"--data: {args.data!r} has {bundle.num_classes} classes, the checkpoint {classes}"
        )
    in_chans = recorded_int(metadata, "in_chans", bundle.in_chans, args.checkpoint, "--checkpoint")
    size = args.image_size or recorded_int(
        metadata, "image_size", bundle.image_size, args.checkpoint, "--checkpoint"
    )
    crop_pct = None
    if folder:  # decode at the final size with the model's crop (timm's eval transform)
        crop_pct = eval_settings(model, metadata, size, args.crop_pct).crop_pct
        bundle = dataclasses.replace(
            bundle, val=bundle.val.with_eval_crop(size, crop_pct), image_size=size
        )
    model.eval()
    if args.reparam:
        reparameterize(model)
    # The blocks keep activations channels-last; weights in the same layout spare oneDNN a
    # reorder of every dense conv weight per call.
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=layout)
    if args.compile:
        model = torch.compile(model, dynamic=False)  # static shapes, as in training
    transform = BatchTransform(
        size,
        bundle.mean,
        bundle.std,
        bundle.num_classes,
        in_chans,
    ).to(device)
    loader = val_loader(bundle, args.batch_size, args.workers, args.limit)
    result = evaluate_model(model, loader, transform, device, args.amp)
    extra = {} if crop_pct is None else {"image_size": size, "crop_pct": crop_pct}
    return {"model": metadata.get("model", args.model), **extra, **result}


def run(args: argparse.Namespace) -> int:
    result = evaluate_checkpoint(args)
    result = {"reparam": args.reparam, **result}
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['model']}{' (re-parameterised)' if args.reparam else ''} on {args.data}: "
            f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
            f"loss {result['loss']:.4f}  ({result['count']} images)"
        )
    return 0
