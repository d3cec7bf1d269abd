"""Small real data sets that work offline: Fashion-MNIST (Debian package) and sklearn digits."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from shiftwise.errors import MissingFileError

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "load_digits", "load_fashion_mnist"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)


def _read_idx(path: Path, offset: int) -> np.ndarray:
    """The payload bytes of a gzipped IDX file after its ``offset``-byte header."""
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(bytearray(handle.read()), dtype=np.uint8, offset=offset)


def load_fashion_mnist(root: str | os.PathLike = FASHION_MNIST_DIR) -> dict[str, np.ndarray]:
    """Fashion-MNIST as ``{"train_images": uint8 [60000, 1, 28, 28], "train_labels": int64
    [60000], "val_images": uint8 [10000, 1, 28, 28], "val_labels": int64 [10000]}``.

    Reads the IDX files of Debian's ``dataset-fashion-mnist`` package (images at byte offset
    16, labels at 8); raises FileNotFoundError telling how to install it when they are absent.
    """
    root = Path(root)
    arrays = {}
    for split, prefix in (("train", "train"), ("val", "t10k")):
        images = root / f"{prefix}-images-idx3-ubyte.gz"
        labels = root / f"{prefix}-labels-idx1-ubyte.gz"
        for path in (images, labels):
            if not path.is_file():
                raise MissingFileError(
                    f"data.name: fashion-mnist needs {path}; install it with "
                    "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu)"
                )
        arrays[f"{split}_images"] = _read_idx(images, 16).reshape(-1, 1, 28, 28)
        arrays[f"{split}_labels"] = _read_idx(labels, 8).astype(np.int64)
    return arrays


def load_digits(val_fraction: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's 1,797 handwritten 8x8 digits, scaled 0..16 -> uint8 0..255 and split.

    Returns the same keys as :func:`load_fashion_mnist` with images uint8 [N, 1, 8, 8]; the
    split is a seeded shuffle with ``val_fraction`` of the images held out.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise MissingFileError(
            "data.name: digits needs scikit-learn: pip install scikit-learn"
        ) from error
    bunch = sklearn_digits()
    images = np.clip(bunch.images * (255.0 / 16.0) + 0.5, 0, 255).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(labels.shape[0])
    n_val = round(val_fraction * labels.shape[0])
    val, train = order[:n_val], order[n_val:]
    return {
        "train_images": images[train],
        "train_labels": labels[train],
        "val_images": images[val],
        "val_labels": labels[val],
    }
