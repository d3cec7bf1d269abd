"""Data sources (``data.name``): the bundled set, Fashion-MNIST, digits and ImageFolder trees.

Every source becomes a :class:`DataBundle` whose datasets yield ``(uint8 [C, H, W], label)``.
ImageFolder images are decoded and cropped per image in DataLoader workers, as timm's
``create_transform`` does (:mod:`shiftwise.data.transforms`: random resized crop and flip for
training, resize and centre crop by ``crop_pct`` for evaluation); the in-memory sets are resized
on the device. Colour augmentation, erasing, mixing and normalisation run batched on the
training device (:mod:`shiftwise.data.augment`).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from shiftwise.data.bundled import CLASSES as BUNDLED_CLASSES
from shiftwise.data.bundled import BundledConfig, load_bundled
from shiftwise.data.real import FASHION_MNIST_CLASSES, load_digits, load_fashion_mnist
from shiftwise.data.transforms import EvalCrop, TrainCrop, decode
from shiftwise.errors import MissingFileError, UsageError
from shiftwise.io import read_regular_file

__all__ = [
    "IMAGE_EXTENSIONS",
    "NAMED_SOURCES",
    "ArrayDataset",
    "DataBundle",
    "ImageFolderDataset",
    "load_data",
]

logger = logging.getLogger(__name__)

NAMED_SOURCES = ("bundled", "fashion-mnist", "digits")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class ArrayDataset(Dataset):
    """In-memory images uint8 [N, C, H, W] and labels int64 [N]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if images.ndim != 4 or images.dtype != np.uint8:
            raise UsageError(
                f"images must be uint8 [N, C, H, W], got {images.dtype} {images.shape}"
            )
        if labels.shape != (images.shape[0],):
            raise UsageError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` files decoded with pillow into uint8 [C, size, size].

    Without ``crop_scale`` (evaluation) each image's shorter side is resized to
    ``floor(size / crop_pct)`` and the centre ``size`` square is kept (timm's evaluation
    transform, :class:`~shiftwise.data.transforms.EvalCrop`). With ``crop_scale`` (training)
    each read draws a random resized crop over the whole image (area fraction in
    ``(crop_scale, 1)``, aspect ratio in ``crop_ratio``; ``crop_scale=1``: the centred square
    of the shorter side) and flips it with probability ``hflip``
    (:class:`~shiftwise.data.transforms.TrainCrop`). Resizing is ``interpolation``
    (bicubic, as in the papers). Colour augmentation, erasing and mixing run batched on the
    device (:mod:`shiftwise.data.augment`).

    With a ``seed`` the random draws of sample ``i`` come from a generator seeded by
    ``(seed, epoch, i)`` (:meth:`set_epoch`): the same crops whatever the number of workers,
    the read order or a resume; without one they come from torch's global generator.

    ``classes`` fixes the class order (sorted folder names by default). A class folder
    without images, or an image name that is not a regular file (a FIFO, device, socket:
    opening it could block), is refused with one line naming it; ``allow_empty`` accepts
    empty class folders (validation sets). A file that cannot be decoded (truncated, not an
    image, replaced after listing) gives a zero image with label ``-1`` and a warning naming
    it; the trainer and the evaluation skip and count such samples.
    """

    def __init__(
        self,
        root: Path,
        size: int,
        channels: int = 3,
        classes: list[str] | None = None,
        allow_empty: bool = False,
        *,
        crop_pct: float = 1.0,
        crop_scale: float | None = None,
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.0,
        interpolation: str = "bicubic",
        seed: int | None = None,
    ) -> None:
        self.seed, self.epoch = seed, 0
        if crop_scale is None:
            self.crop: EvalCrop | TrainCrop = EvalCrop(size, crop_pct, interpolation)
        else:
            self.crop = TrainCrop(size, crop_scale, crop_ratio, hflip, interpolation)
        if not root.is_dir():
            raise MissingFileError(f"data directory {str(root)!r} does not exist")
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.classes = list(classes) if classes is not None else found
        if classes is not None and found != self.classes:
            raise UsageError(
                f"class folders of {str(root)!r} must match the training classes "
                f"{self.classes[:5]}..., got {found[:5]}..."
            )
        self.samples = []
        for label, name in enumerate(self.classes):
            files = _image_entries(root / name)
            if not files and not allow_empty:
                raise MissingFileError(
                    f"class folder {str(root / name)!r} holds no images (expected "
                    f"{', '.join(IMAGE_EXTENSIONS)}); remove it or add images"
                )
            self.samples += [(path, label) for path in files]
        if not self.samples:
            raise MissingFileError(
                f"data directory {str(root)!r} holds no images in class folders "
                f"(expected {root}/<class>/*.jpg|png)"
            )
        self.size = size
        self.mode = "RGB" if channels == 3 else "L"

    def with_eval_crop(
        self, size: int, crop_pct: float, interpolation: str = "bicubic"
    ) -> ImageFolderDataset:
        """The same files (not listed again) with the evaluation crop of ``size`` and
        ``crop_pct``."""
        other = copy.copy(self)
        other.crop, other.size = EvalCrop(size, crop_pct, interpolation), size
        return other

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops the images get (with a ``seed``); call it
        before the epoch's DataLoader iterator is created (workers copy the dataset then)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _generator(self, index: int) -> torch.Generator | None:
        """The generator of sample ``index``'s random crop in this epoch (``None``: torch's
        global one, when no ``seed`` was given)."""
        if self.seed is None or not isinstance(self.crop, TrainCrop):
            return None
        mixed = ((self.seed * 1_000_003 + self.epoch) * 2_000_029 + index) % (1 << 63)
        return torch.Generator().manual_seed(mixed)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            data = read_regular_file(path, "image")
            return decode(data, self.mode, self.crop, self._generator(index)), label
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            logger.warning("skipping unreadable image %s (%s)", path, error)
            channels = 3 if self.mode == "RGB" else 1
            return torch.zeros(channels, self.size, self.size, dtype=torch.uint8), -1


def _image_entries(folder: Path) -> list[Path]:
    """The image files of ``folder`` (by extension), sorted; an image name that is not a
    regular file is refused without opening it."""
    files = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            if not entry.is_file():
                if entry.is_dir():
                    continue
                raise UsageError(
                    f"{entry.path!r} is not a regular file (a FIFO, device or socket); "
                    "refusing to read it"
                )
            files.append(Path(entry.path))
    return sorted(files)


@dataclass
class DataBundle:
    """Train/val datasets of one source and what a model and the augmentation need to know.

    ``image_size`` is the side the batches are resized to on the device; ``geometric_aug``
    says whether crops and flips keep labels valid (False for the bundled set, whose labels
    are directions); ``mean``/``std`` normalise [0, 1] pixels per channel;
    ``crops_in_workers`` says the training images arrive randomly cropped and flipped
    (ImageFolder data loaded with a ``crop_scale``): the device must not crop or flip again
    (:class:`~shiftwise.data.augment.BatchTransform`'s ``crops_in_workers``).
    """

    name: str
    train: Dataset
    val: Dataset
    classes: list[str]
    in_chans: int
    image_size: int
    geometric_aug: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crops_in_workers: bool = False

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the training images' seeded random crops (ImageFolder data
        loaded with a ``seed``; the other sources have none)."""
        if isinstance(self.train, ImageFolderDataset):
            self.train.set_epoch(epoch)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _from_arrays(name, arrays, classes, image_size, geometric_aug) -> DataBundle:
    """A bundle over in-memory arrays, with mean/std measured on (up to 2,000) train images."""
    images = arrays["train_images"]
    channels = images.shape[1]
    sample = images[:2000].astype(np.float64) / 255.0
    mean = tuple(float(v) for v in sample.mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in np.maximum(sample.std(axis=(0, 2, 3)), 1e-3))
    return DataBundle(
        name=name,
        train=ArrayDataset(arrays["train_images"], arrays["train_labels"]),
        val=ArrayDataset(arrays["val_images"], arrays["val_labels"]),
        classes=list(classes),
        in_chans=channels,
        image_size=image_size,
        geometric_aug=geometric_aug,
        mean=mean,
        std=std,
    )


def load_data(
    source: str = "bundled",
    *,
    image_size: int | None = None,
    data_dir: str | os.PathLike | None = None,
    bundled: BundledConfig | None = None,
    crop_pct: float = 1.0,
    crop_scale: float | None = None,
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.0,
    interpolation: str = "bicubic",
    seed: int | None = None,
) -> DataBundle:
    """The :class:`DataBundle` of ``source``: ``"bundled"``, ``"fashion-mnist"``, ``"digits"``
    or an ImageFolder root holding ``train/<class>/*`` and ``val/<class>/*``.

    ``image_size`` overrides the side batches are resized to (defaults: bundled 64,
    Fashion-MNIST and digits 32, ImageFolder 224); ``data_dir`` is the bundled set's cache
    directory; ``bundled`` its generator configuration.

    ImageFolder only (the in-memory sets are resized and augmented on the device): the
    validation images are resized to ``floor(image_size / crop_pct)`` and centre-cropped
    (timm's evaluation transform; a model's ``pretrained_cfg["crop_pct"]``, 0.875 for the
    papers' 224 px models). With ``crop_scale`` the training images get timm's random resized
    crop over the whole image (area in ``(crop_scale, 1)``, aspect ratio in ``crop_ratio``)
    and a flip with probability ``hflip`` in the DataLoader workers, and the bundle's
    ``crops_in_workers`` is set; without it they are centre-cropped like ``crop_pct=1``
    validation images; ``seed`` makes each training crop a function of ``(seed, epoch,
    index)`` (:meth:`DataBundle.set_epoch`). See :class:`ImageFolderDataset`.
    """
    if source == "bundled":
        cfg = bundled or BundledConfig()
        arrays = load_bundled(cfg, data_dir)
        return _from_arrays(source, arrays, BUNDLED_CLASSES, image_size or cfg.image_size, False)
    if source == "fashion-mnist":
        return _from_arrays(
            source, load_fashion_mnist(), FASHION_MNIST_CLASSES, image_size or 32, True
        )
    if source == "digits":
        classes = [str(d) for d in range(10)]
        return _from_arrays(source, load_digits(), classes, image_size or 32, False)
    root = Path(source)
    if not root.exists():
        raise MissingFileError(
            f"data.name: expected one of {', '.join(NAMED_SOURCES)} or an existing ImageFolder "
            f"directory, got {source!r} (no such directory)"
        )
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise MissingFileError(
            f"data.name: the directory {source!r} must hold train/<class>/* and "
            "val/<class>/* folders"
        )
    size = image_size or 224
    train = ImageFolderDataset(
        root / "train",
        size,
        crop_scale=crop_scale,
        crop_ratio=crop_ratio,
        hflip=hflip,
        interpolation=interpolation,
        seed=seed,
    )
    val = ImageFolderDataset(
        root / "val",
        size,
        classes=train.classes,
        allow_empty=True,
        crop_pct=crop_pct,
        interpolation=interpolation,
    )
    return DataBundle(
        name=str(root),
        train=train,
        val=val,
        classes=train.classes,
        in_chans=3,
        image_size=size,
        geometric_aug=True,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        crops_in_workers=crop_scale is not None,
    )
