"""Per-image crops of decoded photos, as timm's ``create_transform`` makes them (run in workers).

:class:`EvalCrop` is timm's evaluation transform for a model's ``pretrained_cfg``: the shorter
side resized to ``floor(size / crop_pct)`` (bicubic), then the centre ``size x size`` square.
The result is timm's (the same pillow calls). For extreme aspect ratios, where the resized image
would exceed :data:`FULL_RESIZE_LIMIT` crops (a 1x100000 strip would become gigabytes), only the
crop is computed (pillow's ``resize`` with a source ``box``); pillow then clips its first pass
over other rows, so pixels may differ from timm's by a few levels.

:class:`TrainCrop` is timm's ``RandomResizedCropAndInterpolation`` over the whole decoded image
(area fraction uniform in ``(crop_scale, 1)``, log-uniform aspect ratio in ``ratio``, ten tries
then a centre fallback) followed by the horizontal flip. Its randomness comes from a
``generator`` argument: :class:`~shiftwise.data.datasets.ImageFolderDataset` with a ``seed``
passes one seeded by ``(seed, epoch, index)``, so a sample's crop does not depend on workers,
read order or a resume; without, torch's global generator (per worker in DataLoader workers).

:func:`decode` reads an image file's bytes, converts them to the dataset's mode (RGB for
colour models, as timm's loader; EXIF orientation is ignored, as there) and applies one of
them. A large JPEG is decoded at a reduced scale (pillow's ``Image.draft``, libjpeg's DCT
scaling) only for training crops, and only when the reduced crop still has at least
:data:`DRAFT_MARGIN` pixels per output pixel along each side. Documented tolerance: such a
crop differs from a full decode's by a mean absolute difference of at most 2 of 255 levels
(checked by ``tests/data/test_transforms.py``; measured 0.6-0.9 on average over photo-like
2403x1801 and 4000x3000 JPEGs, worst crop 1.1, single pixels at sharp edges up to 14).
Images too small for that margin (e.g. 500x375 at 224 px) are always decoded in full.
Evaluation never reduces: DCT scaling moves fine detail by up to 5-7 levels even with a 7x
margin, more than the 1/255 within which evaluation keeps to timm's full-decode pipeline.
"""

from __future__ import annotations

import math
from io import BytesIO

import numpy as np
import torch
from PIL import Image

from shiftwise.errors import UsageError

__all__ = [
    "DRAFT_MARGIN",
    "FULL_RESIZE_LIMIT",
    "INTERPOLATIONS",
    "EvalCrop",
    "TrainCrop",
    "decode",
    "eval_resize_size",
]

INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
# Evaluation resizes the whole image (as timm) up to this many times the crop's pixels; past
# it (aspect ratios beyond ~50:1) only the crop is computed, within a few levels of timm's.
FULL_RESIZE_LIMIT = 64
# A training crop is decoded at 1/2, 1/4 or 1/8 scale only while the crop keeps at least this
# many reduced pixels per output pixel along each side.
DRAFT_MARGIN = 2.0


def _interpolation(name: str, option: str) -> Image.Resampling:
    if name not in INTERPOLATIONS:
        raise UsageError(f"{option}: expected one of {sorted(INTERPOLATIONS)}, got {name!r}")
    return INTERPOLATIONS[name]


def eval_resize_size(size: int, crop_pct: float) -> int:
    """The shorter side an image is resized to before its centre ``size`` crop (timm's
    ``floor(size / crop_pct)``)."""
    return math.floor(size / crop_pct)


class EvalCrop:
    """PIL image -> its centre ``size x size`` crop after resizing the shorter side to
    ``floor(size / crop_pct)``; ``crop_pct`` in (0, 1] (1: the whole shorter side)."""

    def __init__(self, size: int, crop_pct: float = 1.0, interpolation: str = "bicubic") -> None:
        if not (isinstance(crop_pct, int | float) and 0 < crop_pct <= 1):
            raise UsageError(f"crop_pct: expected a number in (0, 1], got {crop_pct!r}")
        if size < 1:
            raise UsageError(f"image_size: expected an integer >= 1, got {size}")
        self.size, self.crop_pct = size, float(crop_pct)
        self.resample = _interpolation(interpolation, "interpolation")

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of the image resized before the crop (torchvision's ``Resize``
        of the shorter side: the longer side truncated)."""
        short = eval_resize_size(self.size, self.crop_pct)
        if width <= height:
            return short, int(short * height / width)
        return int(short * width / height), short

    def __call__(self, image: Image.Image) -> Image.Image:
        """The centre crop of ``image`` resized (offsets rounded as torchvision's
        ``CenterCrop``). Past :data:`FULL_RESIZE_LIMIT` only the crop is computed."""
        new_w, new_h = self.resized_size(*image.size)
        left = round((new_w - self.size) / 2.0)
        top = round((new_h - self.size) / 2.0)
        crop = (left, top, left + self.size, top + self.size)
        if new_w * new_h <= FULL_RESIZE_LIMIT * self.size**2:
            return image.resize((new_w, new_h), self.resample).crop(crop)
        sx, sy = image.size[0] / new_w, image.size[1] / new_h
        box = (crop[0] * sx, crop[1] * sy, crop[2] * sx, crop[3] * sy)
        return image.resize((self.size, self.size), self.resample, box=box)


class TrainCrop:
    """PIL image -> a random resized crop of ``size x size`` over the whole image, flipped
    left-right with probability ``hflip`` (timm's ``transforms_imagenet_train`` geometry).

    ``crop_scale`` is the smallest area fraction (timm's ``scale=(crop_scale, 1)``),
    ``ratio`` the aspect-ratio range (width / height). ``crop_scale=1`` means no random crop
    (``AugmentConfig``'s convention): the centred square of the shorter side, flipped.
    """

    def __init__(
        self,
        size: int,
        crop_scale: float = 0.08,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        interpolation: str = "bicubic",
    ) -> None:
        if size < 1:
            raise UsageError(f"image_size: expected an integer >= 1, got {size}")
        if not 0 < crop_scale <= 1:
            raise UsageError(f"crop_scale: expected a number in (0, 1], got {crop_scale!r}")
        if not 0 < ratio[0] <= ratio[1]:
            raise UsageError(f"ratio: expected 0 < low <= high, got {ratio!r}")
        if not 0 <= hflip <= 1:
            raise UsageError(f"hflip: expected a probability in [0, 1], got {hflip!r}")
        self.size, self.crop_scale, self.ratio, self.hflip = size, crop_scale, ratio, hflip
        self.resample = _interpolation(interpolation, "interpolation")

    def params(
        self, width: int, height: int, generator: torch.Generator | None = None
    ) -> tuple[int, int, int, int]:
        """A random crop ``(left, top, crop_width, crop_height)`` of a ``width x height``
        image, drawn like timm's ``RandomResizedCropAndInterpolation.get_params`` (from
        ``generator``, torch's global one by default)."""
        if self.crop_scale >= 1:
            side = min(width, height)
            return (width - side) // 2, (height - side) // 2, side, side
        area = width * height
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            draws = torch.rand(2, dtype=torch.float64, generator=generator).tolist()
            target = area * (self.crop_scale + (1.0 - self.crop_scale) * draws[0])
            aspect = math.exp(log_low + (log_high - log_low) * draws[1])
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (), generator=generator).item())
                left = int(torch.randint(0, width - w + 1, (), generator=generator).item())
                return left, top, w, h
        aspect = width / height  # fallback: the central crop nearest the ratio range
        w, h = width, height
        if aspect < self.ratio[0]:
            h = round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            w = round(height * self.ratio[1])
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> Image.Image:
        """The augmented crop of ``image`` (random draws from ``generator``)."""
        return self.apply(image, image.size, self.params(*image.size, generator), generator)

    def apply(
        self,
        image: Image.Image,
        full_size: tuple[int, int],
        crop: tuple[int, int, int, int],
        generator: torch.Generator | None = None,
    ) -> Image.Image:
        """``crop`` (drawn by :meth:`params` for a ``full_size`` image) of ``image``, which is
        that image or its decode at a reduced scale, resized to ``size`` and maybe flipped
        (the flip drawn from ``generator``)."""
        left, top, w, h = crop
        if image.size == tuple(full_size):
            out = image.crop((left, top, left + w, top + h))
            out = out.resize((self.size, self.size), self.resample)
        else:  # decoded at 1/2, 1/4 or 1/8 scale: reduced pixel i covers [i*s, (i+1)*s)
            s = round(full_size[0] / image.size[0])
            box = (left / s, top / s, (left + w) / s, (top + h) / s)
            out = image.resize((self.size, self.size), self.resample, box=box)
        if self.hflip > 0 and torch.rand((), generator=generator).item() < self.hflip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return out


def decode(
    data: bytes,
    mode: str,
    crop: EvalCrop | TrainCrop,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The image file ``data`` converted to ``mode`` ("RGB" or "L") and cropped by ``crop``
    (a training crop's draws from ``generator``), as uint8 [C, size, size]. Raises what
    pillow raises for an unreadable file."""
    with Image.open(BytesIO(data)) as image:
        full_size = image.size
        if isinstance(crop, TrainCrop):
            params = crop.params(*full_size, generator)
            if image.format == "JPEG":
                _reduce_jpeg(image, params[2:], crop.size)
            out = crop.apply(_converted(image, mode), full_size, params, generator)
        else:
            out = crop(_converted(image, mode))
        pixels = np.asarray(out, dtype=np.uint8).reshape(out.size[1], out.size[0], -1)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def _converted(image: Image.Image, mode: str) -> Image.Image:
    return image if image.mode == mode else image.convert(mode)


def _reduce_jpeg(image: Image.Image, crop_size: tuple[int, int], size: int) -> None:
    """Make libjpeg decode ``image`` at 1/2, 1/4 or 1/8 scale when a crop of ``crop_size``
    keeps at least ``DRAFT_MARGIN * size`` reduced pixels per side (nothing otherwise)."""
    reduction = min(crop_size) / (DRAFT_MARGIN * size)
    if reduction < 2:
        return
    scale = 1 << min(3, int(math.log2(reduction)))
    width, height = image.size
    image.draft(image.mode, (max(1, width // scale), max(1, height // scale)))
