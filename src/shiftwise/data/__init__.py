"""Data: the bundled generated task, Fashion-MNIST, digits, ImageFolder (timm's per-image crops
in the workers) and batched augmentation on the device."""

from shiftwise.data.augment import AugmentConfig, BatchTransform
from shiftwise.data.bundled import BundledConfig, load_bundled
from shiftwise.data.datasets import (
    NAMED_SOURCES,
    ArrayDataset,
    DataBundle,
    ImageFolderDataset,
    load_data,
)
from shiftwise.data.transforms import EvalCrop, TrainCrop

__all__ = [
    "NAMED_SOURCES",
    "ArrayDataset",
    "AugmentConfig",
    "BatchTransform",
    "BundledConfig",
    "DataBundle",
    "EvalCrop",
    "ImageFolderDataset",
    "TrainCrop",
    "load_bundled",
    "load_data",
]
