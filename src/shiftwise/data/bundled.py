"""The bundled default data set: a generated task that needs a large receptive field.

Every image holds two *key* marks, a plus sign and a hollow square, placed at least
``min_distance`` pixels apart, among ``distractors`` other marks (filled squares, diagonal
crosses, bars) and background noise. The label is the direction from the plus to the square:
0 right, 1 left, 2 down, 3 up. Both marks must be seen together to answer, and a bag of local
features cannot tell "plus left of square" from "square left of plus", so a network needs a
receptive field spanning the two marks (more than ``min_distance`` pixels) before it can pool.

The generator is deterministic for a given :class:`BundledConfig` (NumPy ``default_rng`` seeded
by ``seed``), takes a few seconds for thousands of images, and its output is cached as one
``.npz`` file under :func:`cache_dir`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shiftwise.errors import UsageError
from shiftwise.io import atomic_write

__all__ = ["CLASSES", "BundledConfig", "cache_dir", "generate", "load_bundled"]

logger = logging.getLogger(__name__)

CLASSES = ("right", "left", "down", "up")
_GENERATOR_VERSION = 1
_DIRECTIONS = np.array([[0, 1], [0, -1], [1, 0], [-1, 0]])  # (row, col) per class


@dataclass(frozen=True)
class BundledConfig:
    """Parameters of the generated task; equal configs give bit-identical images."""

    image_size: int = 64
    channels: int = 1
    num_train: int = 12000
    num_val: int = 2000
    min_distance: int = 30
    mark_size: int = 7
    distractors: int = 4
    noise: float = 0.08
    seed: int = 0

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise UsageError(f"channels must be 1 or 3, got {self.channels}")
        if self.mark_size < 5 or self.mark_size % 2 == 0:
            raise UsageError(f"mark_size must be an odd integer >= 5, got {self.mark_size}")
        if self.image_size < self.min_distance + 2 * self.mark_size:
            raise UsageError(
                f"image_size must be at least min_distance + 2 * mark_size = "
                f"{self.min_distance + 2 * self.mark_size}, got {self.image_size}"
            )
        for name in ("num_train", "num_val"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}")

    def key(self) -> str:
        """A short hash naming the cache file of this configuration."""
        text = json.dumps({**dataclasses.asdict(self), "version": _GENERATOR_VERSION})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stamps(size: int) -> dict[str, np.ndarray]:
    """Binary masks [size, size] of the key marks and the distractor shapes."""
    mask = np.zeros((size, size), dtype=bool)
    mid = size // 2
    plus = mask.copy()
    plus[mid, :] = plus[:, mid] = True
    ring = mask.copy()
    ring[[0, -1], :] = ring[:, [0, -1]] = True
    eye = np.eye(size, dtype=bool)
    cross = eye | eye[::-1]
    filled = ~mask
    filled[[0, -1], :] = filled[:, [0, -1]] = False
    bar = mask.copy()
    bar[mid - 1 : mid + 2, :] = True
    return {"plus": plus, "ring": ring, "cross": cross, "filled": filled, "bar": bar}


def _key_positions(rng: np.random.Generator, labels: np.ndarray, cfg: BundledConfig):
    """Top-left corners [N, 2] of the plus and of the square, consistent with ``labels``.

    The square sits ``distance`` pixels from the plus along the label's direction
    (``min_distance`` up to the image allows), with a lateral offset of at most half of it,
    so the dominant axis always names the class.
    """
    n = labels.shape[0]
    span = cfg.image_size - cfg.mark_size
    plus = np.empty((n, 2), dtype=np.int64)
    square = np.empty((n, 2), dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        direction = _DIRECTIONS[labels[todo]]
        distance = rng.integers(cfg.min_distance, span + 1, size=todo.size)
        lateral = (rng.uniform(-0.5, 0.5, size=todo.size) * distance).astype(np.int64)
        start = rng.integers(0, span + 1, size=(todo.size, 2))
        offset = direction * distance[:, None] + direction[:, ::-1] * lateral[:, None]
        end = start + offset
        ok = np.all((end >= 0) & (end <= span), axis=1)
        plus[todo[ok]], square[todo[ok]] = start[ok], end[ok]
        todo = todo[~ok]
    return plus, square


def _free_position(rng: np.random.Generator, taken: list[np.ndarray], cfg: BundledConfig):
    """A top-left corner whose mark does not touch any mark already at ``taken``."""
    span = cfg.image_size - cfg.mark_size
    for _ in range(100):
        pos = rng.integers(0, span + 1, size=2)
        if all(np.abs(pos - other).max() > cfg.mark_size for other in taken):
            return pos
    return None


def generate(cfg: BundledConfig, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images uint8 [count, channels, S, S] and labels int64 [count] (0..3)."""
    rng = np.random.default_rng(seed)
    size, m = cfg.image_size, cfg.mark_size
    stamps = _stamps(m)
    distractor_shapes = [stamps["cross"], stamps["filled"], stamps["bar"], stamps["bar"].T]
    labels = rng.integers(0, len(CLASSES), size=count)
    plus, square = _key_positions(rng, labels, cfg)
    images = rng.normal(0.0, cfg.noise, size=(count, cfg.channels, size, size))
    for i in range(count):
        marks = [(plus[i], stamps["plus"]), (square[i], stamps["ring"])]
        taken = [plus[i], square[i]]
        for _ in range(cfg.distractors):
            pos = _free_position(rng, taken, cfg)
            if pos is not None:
                taken.append(pos)
                marks.append((pos, distractor_shapes[rng.integers(len(distractor_shapes))]))
        for (r, c), stamp in marks:
            color = rng.uniform(0.5, 1.0, size=(cfg.channels, 1, 1))
            patch = images[i, :, r : r + m, c : c + m]
            images[i, :, r : r + m, c : c + m] = np.where(stamp, color, patch)
    pixels = np.clip(images * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return pixels, labels.astype(np.int64)


def cache_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where generated data is cached: ``data_dir``, else ``$SHIFTWISE_DATA_DIR``, else
    ``$XDG_CACHE_HOME/shiftwise`` (``~/.cache/shiftwise`` when unset)."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get("SHIFTWISE_DATA_DIR"):
        return Path(os.environ["SHIFTWISE_DATA_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "shiftwise"


def load_bundled(
    cfg: BundledConfig = BundledConfig(), data_dir: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """Train and validation arrays of the bundled set, generated once and then read from cache.

    Returns ``{"train_images": uint8 [N, C, S, S], "train_labels": int64 [N],
    "val_images": ..., "val_labels": ...}``; the cache file is written atomically.
    """
    path = cache_dir(data_dir) / f"bundled-{cfg.key()}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return {name: cached[name] for name in cached.files}
    logger.info("generating the bundled data set into %s", path)
    train_images, train_labels = generate(cfg, cfg.num_train, cfg.seed)
    val_images, val_labels = generate(cfg, cfg.num_val, cfg.seed + 1_000_003)
    arrays = {
        "train_images": train_images,
        "train_labels": train_labels,
        "val_images": val_images,
        "val_labels": val_labels,
    }
    atomic_write(path, lambda handle: np.savez(handle, **arrays))
    return arrays
