"""Predictions of a trained model on image files, through the evaluation input pipeline.

:func:`predict_images` decodes each file in DataLoader workers with the model's evaluation
crop (:class:`~shiftwise.data.transforms.EvalCrop`: shorter side to
``floor(image_size / crop_pct)``, bicubic, centre ``image_size`` square), normalises batches
on the device with the model's ``pretrained_cfg`` mean and std (ImageNet's, the statistics
``shiftwise train`` uses for ImageFolder data) and returns the top-k classes and softmax
probabilities per readable file. Files that cannot be decoded are returned separately with
the reason, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from shiftwise.data.augment import BatchTransform
from shiftwise.data.datasets import IMAGE_EXTENSIONS
from shiftwise.data.transforms import EvalCrop, decode
from shiftwise.errors import MissingFileError, UsageError
from shiftwise.io import read_regular_file

__all__ = [
    "EvalSettings",
    "Prediction",
    "class_names",
    "eval_settings",
    "find_images",
    "predict_images",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    """The evaluation pipeline of a model: input side, crop fraction, normalisation."""

    image_size: int
    crop_pct: float
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Prediction:
    """The ``k`` most probable classes of one file (``indices`` [k], ``probabilities`` [k],
    most probable first)."""

    path: Path
    indices: tuple[int, ...]
    probabilities: tuple[float, ...]


def eval_settings(
    model: nn.Module,
    metadata: Mapping[str, str],
    image_size: int | None = None,
    crop_pct: float | None = None,
) -> EvalSettings:
    """The evaluation pipeline of ``model``: ``image_size`` or the side its weights file
    records (``metadata["image_size"]``) or its ``pretrained_cfg`` input size; ``crop_pct`` or
    the ``pretrained_cfg``'s (timm's default 0.875 when it has none); its mean and std."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = image_size
    if size is None and metadata.get("image_size", "").isdigit():
        size = int(metadata["image_size"])
    if size is None:
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
    pct = crop_pct if crop_pct is not None else float(cfg.get("crop_pct") or 0.875)
    if not 0 < pct <= 1:
        raise UsageError(f"--crop-pct: expected a number in (0, 1], got {pct}")
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return EvalSettings(size, pct, mean, std)


def class_names(
    metadata: Mapping[str, str], num_classes: int, class_map: str | os.PathLike | None = None
) -> list[str] | None:
    """Class names for the ``num_classes`` outputs: the lines of ``class_map`` (a text file,
    one name per line) when given, else the ``classes`` a weights file records (a JSON list,
    written by ``shiftwise train``), else ``None``. A ``class_map`` of the wrong length is
    one :class:`UsageError`; recorded names that do not fit are ignored with a warning."""
    if class_map is not None:
        data = read_regular_file(class_map, "--class-map")
        try:
            names = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise UsageError(f"--class-map: {str(class_map)!r} is not UTF-8 text") from None
        if len(names) != num_classes:
            raise UsageError(
                f"--class-map: {str(class_map)!r} names {len(names)} classes, the model has "
                f"{num_classes} outputs"
            )
        return names
    text = metadata.get("classes")
    if text is None:
        return None
    try:
        names = json.loads(text)
    except ValueError:
        names = None
    if not (
        isinstance(names, list)
        and len(names) == num_classes
        and all(isinstance(name, str) for name in names)
    ):
        logger.warning("ignoring the recorded class names: not a list of %d names", num_classes)
        return None
    return names


def find_images(inputs: Sequence[str | os.PathLike], option: str = "images") -> list[Path]:
    """The image files named by ``inputs``: files as given (any extension), folders searched
    recursively for image extensions (sorted). A missing input is one
    :class:`MissingFileError` naming it; no image at all is one :class:`UsageError`."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()
            )
        elif path.exists() or path.is_symlink():
            found.append(path)
        else:
            raise MissingFileError(f"{option}: no such file or directory {str(path)!r}")
    if not found:
        raise UsageError(
            f"{option}: no images found in {[str(i) for i in inputs]} (expected files or "
            f"folders holding {', '.join(IMAGE_EXTENSIONS)})"
        )
    return found


class _ImageFiles(Dataset):
    """Files -> ``(uint8 [C, size, size], index, error)``; an unreadable file gives a zero
    image and the reason."""

    def __init__(self, paths: Sequence[Path], crop: EvalCrop, mode: str) -> None:
        self.paths, self.crop, self.mode = list(paths), crop, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            data = read_regular_file(self.paths[index], "image")
            return decode(data, self.mode, self.crop), index, ""
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            channels = 3 if self.mode == "RGB" else 1
            size = self.crop.size
            if isinstance(error, UnidentifiedImageError):
                reason = "not an image format pillow reads"
            else:
                reason = " ".join(str(error).split()) or type(error).__name__
            return torch.zeros(channels, size, size, dtype=torch.uint8), index, reason


@torch.no_grad()
def predict_images(
    model: nn.Module,
    paths: Sequence[Path],
    settings: EvalSettings,
    *,
    top_k: int = 5,
    batch_size: int = 32,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    channels_last: bool = False,
    compile: bool = False,
) -> tuple[list[Prediction], list[tuple[Path, str]]]:
    """The top ``top_k`` classes and probabilities of ``model`` on each readable file of
    ``paths`` (in order), and the unreadable files with their reasons.

    The model is put in eval mode on ``device`` (with ``channels_last``, its weights and the
    batches in that layout; with ``compile``, the forward is ``torch.compile``'d); ``progress``
    shows a tqdm bar on stderr.
    """
    device = torch.device(device)
    in_chans = _stem_channels(model)
    if in_chans != 3:
        raise UsageError(
            f"--checkpoint: the model takes {in_chans}-channel input; predict runs models of "
            "RGB images (trained on an ImageFolder or converted from official weights)"
        )
    num_classes = int(model.num_classes)
    transform = BatchTransform(settings.image_size, settings.mean, settings.std, num_classes, 3)
    transform.eval()
    transform.to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.eval().to(device, memory_format=layout)
    forward = torch.compile(model, dynamic=False) if compile else model
    k = min(top_k, num_classes)
    dataset = _ImageFiles(paths, EvalCrop(settings.image_size, settings.crop_pct), "RGB")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    predictions: list[Prediction] = []
    failed: list[tuple[Path, str]] = []
    with tqdm(total=len(dataset), desc="predict", unit="img", disable=not progress) as bar:
        for images, indices, errors in loader:
            readable = torch.tensor([not error for error in errors], dtype=torch.bool)
            failed += [
                (dataset.paths[int(i)], error)
                for i, error in zip(indices, errors, strict=True)
                if error
            ]
            if bool(readable.any()):
                x, _ = transform(images[readable].to(device), indices[readable].to(device))
                x = x.contiguous(memory_format=layout)
                probabilities = forward(x).float().softmax(dim=1)
                top = probabilities.topk(k, dim=1)
                for i, values, classes in zip(
                    indices[readable].tolist(),
                    top.values.cpu().tolist(),
                    top.indices.cpu().tolist(),
                    strict=True,
                ):
                    predictions.append(Prediction(dataset.paths[i], tuple(classes), tuple(values)))
            bar.update(len(indices))
    return predictions, failed


def _stem_channels(model: nn.Module) -> int:
    """Input channels of ``model`` (its first convolution's)."""
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return first.in_channels
