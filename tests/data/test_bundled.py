"""The bundled generated data set: deterministic, labels consistent with the geometry, cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shiftwise.data.bundled import (
    CLASSES,
    BundledConfig,
    _key_positions,
    _stamps,
    cache_dir,
    generate,
    load_bundled,
)

SMALL = BundledConfig(channels=3, num_train=64, num_val=32)


def test_generation_is_deterministic_and_seed_dependent() -> None:
    a_images, a_labels = generate(SMALL, 40, seed=3)
    b_images, b_labels = generate(SMALL, 40, seed=3)
    c_images, _ = generate(SMALL, 40, seed=4)
    assert a_images.dtype == np.uint8 and a_images.shape == (40, 3, 64, 64)
    assert a_labels.dtype == np.int64 and set(a_labels.tolist()) <= set(range(len(CLASSES)))
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert not np.array_equal(a_images, c_images)


def test_key_marks_are_far_apart_and_the_label_is_their_direction() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=2000)
    plus, square = _key_positions(rng, labels, SMALL)
    span = SMALL.image_size - SMALL.mark_size
    assert plus.min() >= 0 and square.min() >= 0 and max(plus.max(), square.max()) <= span
    delta = square - plus  # (row, col)
    assert np.abs(delta).max(axis=1).min() >= SMALL.min_distance
    along_cols = np.abs(delta[:, 1]) > np.abs(delta[:, 0])
    direction = np.where(
        along_cols, np.where(delta[:, 1] > 0, 0, 1), np.where(delta[:, 0] > 0, 2, 3)
    )
    np.testing.assert_array_equal(direction, labels)


def test_exactly_the_two_key_marks_are_drawn() -> None:
    cfg = BundledConfig(channels=1, distractors=0, noise=0.0)
    images, labels = generate(cfg, 8, seed=1)
    stamps = _stamps(cfg.mark_size)
    expected = stamps["plus"].sum() + stamps["ring"].sum()  # the marks never overlap
    assert ((images[:, 0] > 0).sum(axis=(1, 2)) == expected).all()
    assert set(labels.tolist()) <= {0, 1, 2, 3}


def test_cache_respects_environment_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHIFTWISE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "shiftwise"
    monkeypatch.setenv("SHIFTWISE_DATA_DIR", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "explicit") == tmp_path / "explicit"

    first = load_bundled(SMALL)
    files = list((tmp_path / "env").glob("bundled-*.npz"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = load_bundled(SMALL)
    assert files[0].stat().st_mtime_ns == stamp
    assert first["train_images"].shape == (64, 3, 64, 64)
    assert first["val_images"].shape == (32, 3, 64, 64)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"channels": 2}, "channels"),
        ({"mark_size": 4}, "mark_size"),
        ({"image_size": 32}, "image_size"),
        ({"num_val": 0}, "num_val"),
    ],
)
def test_bad_config_is_rejected(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BundledConfig(**changes)
