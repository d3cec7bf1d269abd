"""Data: the bundled generated task, Fashion-MNIST, digits, ImageFolder and batched augmentation."""

from shiftwise.data.augment import AugmentConfig, BatchTransform
from shiftwise.data.bundled import BundledConfig, load_bundled
from shiftwise.data.datasets import NAMED_SOURCES, ArrayDataset, DataBundle, load_data

__all__ = [
    "NAMED_SOURCES",
    "ArrayDataset",
    "AugmentConfig",
    "BatchTransform",
    "BundledConfig",
    "DataBundle",
    "load_bundled",
    "load_data",
]
