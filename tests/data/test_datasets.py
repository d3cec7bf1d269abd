"""Data sources: ImageFolder trees, Fashion-MNIST, digits, and their one-line errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shiftwise.data import load_data
from shiftwise.data.real import FASHION_MNIST_DIR, load_fashion_mnist


def _image_folder(root: Path, classes=("cat", "dog"), per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(20 + i, 30, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_image_folder_decodes_resized_uint8(tmp_path: Path) -> None:
    bundle = load_data(str(_image_folder(tmp_path)), image_size=16)
    assert bundle.classes == ["cat", "dog"] and bundle.num_classes == 2
    assert len(bundle.train) == len(bundle.val) == 6 and bundle.geometric_aug
    image, label = bundle.train[4]
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16) and label == 1


def test_image_folder_crops_follow_the_options(tmp_path: Path) -> None:
    """Validation: shorter side to floor(size / crop_pct), centre crop; training with a
    crop_scale: random crops in the workers (so the bundle says so)."""
    root = tmp_path / "data"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))  # 16 x 32, left to right
    for split in ("train", "val"):
        Image.fromarray(ramp).convert("RGB").save(root / split / "a" / "0.png")
    whole = load_data(str(root), image_size=8).val[0][0]
    cropped = load_data(str(root), image_size=8, crop_pct=0.5).val[0][0]
    # crop_pct 1: the 16 x 16 centre of the 16 x 32 ramp; 0.5: the 8 x 8 centre, a narrower
    # range of the ramp.
    spread = [float(img[0, 4, -1]) - float(img[0, 4, 0]) for img in (whole, cropped)]
    assert spread[0] > 1.8 * spread[1] > 0
    bundle = load_data(str(root), image_size=8, crop_scale=0.25, hflip=0.5)
    assert bundle.crops_in_workers and not load_data(str(root), image_size=8).crops_in_workers
    torch.manual_seed(0)
    crops = {tuple(bundle.train[0][0][0, 4].tolist()) for _ in range(10)}
    assert len(crops) > 5
    with pytest.raises(ValueError, match="crop_pct"):
        load_data(str(root), crop_pct=1.2)


def test_missing_and_empty_directories_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_data(str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=r"train/<class>"):
        load_data(str(tmp_path))
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no images"):
        load_data(str(tmp_path))


def test_val_classes_must_match_train(tmp_path: Path) -> None:
    root = _image_folder(tmp_path)
    (root / "val" / "dog").rename(root / "val" / "bird")
    with pytest.raises(ValueError, match="must match the training classes"):
        load_data(str(root))


def test_digits_are_a_small_real_set() -> None:
    bundle = load_data("digits")
    assert bundle.num_classes == 10 and bundle.in_chans == 1 and bundle.image_size == 32
    assert len(bundle.train) + len(bundle.val) == 1797
    image, _ = bundle.train[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.uint8 and int(image.max()) > 200


def test_fashion_mnist_absent_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_idx_files_are_parsed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as handle:
            handle.write(bytes(16) + images.tobytes())
        with gzip.open(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", "wb") as handle:
            handle.write(bytes(8) + labels.tobytes())
        if prefix == "t10k":
            expected_images, expected_labels = images, labels
    arrays = load_fashion_mnist(tmp_path)
    assert arrays["train_images"].shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(arrays["val_images"][:, 0], expected_images)
    np.testing.assert_array_equal(arrays["val_labels"], expected_labels)


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="dataset-fashion-mnist is not installed",
)
def test_installed_fashion_mnist() -> None:
    bundle = load_data("fashion-mnist")
    assert len(bundle.train) == 60000 and len(bundle.val) == 10000 and bundle.num_classes == 10
