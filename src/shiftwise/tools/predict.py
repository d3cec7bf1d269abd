"""``shiftwise predict``: top-k classes of a trained model on image files, as a CSV.

The work is :func:`shiftwise.inference.predict_images` (the evaluation pipeline: the model's
crop, bicubic, its normalisation); this module parses the options and writes the CSV.

The CSV (one row per readable image, in input order) has the columns ``file``, then for each
rank ``r`` of ``--top-k``: ``index_r`` (the output index), ``class_r`` (its name, when the
weights record class names or ``--class-map`` gives them) and ``probability_r``. It is written
atomically. ``--output`` must name a new file or a regular file, which is then replaced (the
user named it); it may never be one of the input images. Unreadable images are listed on
stderr with the reason and skipped; when none is readable the command fails.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from shiftwise.errors import UsageError
from shiftwise.inference import (
    Prediction,
    class_names,
    eval_settings,
    find_images,
    predict_images,
)
from shiftwise.io import atomic_write, check_output_not_input

__all__ = ["register", "run", "write_csv"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="top-k classes of images as a CSV",
        description="Run a trained model (a weights file, checkpoint.pt or run directory) on "
        "image files or folders (searched recursively) and write each image's top-k classes "
        "and probabilities as CSV. Images get the evaluation pipeline of `shiftwise eval`.",
    )
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--checkpoint", required=True, help="weights file or run directory")
    parser.add_argument("--output", "-o", required=True, help="CSV file to write, or - for stdout")
    parser.add_argument("--model", default=None, help="model name (default: the file's)")
    parser.add_argument("--weights", choices=("model", "ema"), default="model")
    parser.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument(
        "--class-map", default=None, help="text file of class names, one per line, in order"
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="input side (default: the weights')"
    )
    parser.add_argument(
        "--crop-pct",
        type=float,
        default=None,
        help="resize the shorter side to image-size / crop-pct, then crop the centre "
        "(default: the model's pretrained_cfg)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: best)")
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels-last weights and batches (default: on, as shiftwise eval)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def write_csv(predictions: list[Prediction], names: list[str] | None, top_k: int) -> bytes:
    """The CSV bytes of ``predictions`` (columns in the module docstring)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["file"]
    for rank in range(1, top_k + 1):
        header += [f"index_{rank}"] + ([f"class_{rank}"] if names else [])
        header += [f"probability_{rank}"]
    writer.writerow(header)
    for prediction in predictions:
        row: list[str] = [str(prediction.path)]
        for index, probability in zip(prediction.indices, prediction.probabilities, strict=True):
            row += [str(index)] + ([names[index]] if names else []) + [f"{probability:.6f}"]
        writer.writerow(row)
    return buffer.getvalue().encode("utf-8")


def _check_output(output: str, inputs: list[Path]) -> Path | None:
    """The output path (``None``: stdout), refused when it is one of ``inputs`` (the images or
    the weights) or exists as anything but a regular file."""
    if output == "-":
        return None
    path = Path(output)
    if path.is_dir():
        raise UsageError(f"--output: {output!r} is a directory, expected a CSV file name")
    if path.exists() and not path.is_file():
        raise UsageError(f"--output: {output!r} exists and is not a regular file")
    check_output_not_input(path, inputs, "--output")
    return path


def run(args: argparse.Namespace) -> int:
    from shiftwise.devices import check_device
    from shiftwise.models.registry import check_image_size
    from shiftwise.models.weights import model_from_weights

    for name in ("top_k", "batch_size"):
        value = getattr(args, name)
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {value}")
    if args.workers < 0:
        raise UsageError(f"--workers: expected an integer >= 0, got {args.workers}")
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise UsageError(f"--crop-pct: expected a number in (0, 1], got {args.crop_pct}")
    images = find_images(args.images, "images")
    output = _check_output(args.output, [*images, Path(args.checkpoint)])
    device = check_device(args.device, "--device")
    model, metadata = model_from_weights(
        args.checkpoint, args.model, args.weights, flag="--checkpoint"
    )
    if args.image_size is not None:
        check_image_size(model, args.image_size, "--image-size")
    names = class_names(metadata, int(model.num_classes), args.class_map)
    settings = eval_settings(model, metadata, args.image_size, args.crop_pct)
    predictions, failed = predict_images(
        model,
        images,
        settings,
        top_k=args.top_k,
        batch_size=args.batch_size,
        workers=args.workers,
        device=device,
        progress=not args.no_progress,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    for path, reason in failed:
        print(
            f"shiftwise predict: skipped unreadable image {str(path)!r} ({reason})", file=sys.stderr
        )
    if not predictions:
        raise UsageError(f"images: none of the {len(images)} images could be read")
    data = write_csv(predictions, names, min(args.top_k, int(model.num_classes)))
    if output is None:
        sys.stdout.write(data.decode("utf-8"))
    else:
        atomic_write(output, data)
        print(
            f"wrote {len(predictions)} predictions to {str(output)!r}"
            + (f" ({len(failed)} unreadable images skipped)" if failed else ""),
            file=sys.stderr,
        )
    return 0
