"""Batched on-device preprocessing: normalisation, channel expansion, soft targets, mixing."""

from __future__ import annotations

import pytest
import torch

from shiftwise.data import AugmentConfig, BatchTransform


def _batch(channels: int = 1, size: int = 8, n: int = 6):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator
    )
    return images, torch.arange(n) % 3


def test_eval_mode_resizes_normalises_and_keeps_labels() -> None:
    images, labels = _batch()
    transform = BatchTransform(8, (0.5,), (0.25,), num_classes=3, in_chans=3).eval()
    x, out_labels = transform(images, labels)
    expected = ((images.float() / 255 - 0.5) / 0.25).expand(-1, 3, -1, -1)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)
    assert torch.equal(out_labels, labels)
    resize = BatchTransform(16, (0.5,), (0.25,), num_classes=3, in_chans=1).eval()
    assert resize(images, labels)[0].shape == (6, 1, 16, 16)


def test_train_mode_gives_smoothed_soft_targets() -> None:
    images, labels = _batch()
    transform = BatchTransform(8, (0.5,), (0.25,), 3, 1, AugmentConfig(smoothing=0.3))
    _, targets = transform.train()(images, labels)
    assert targets.shape == (6, 3)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    torch.testing.assert_close(targets.max(1).values, torch.full((6,), 0.7 + 0.1))
    assert torch.equal(targets.argmax(1), labels)


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixing_gives_two_label_targets(mode: str) -> None:
    torch.manual_seed(0)
    images, labels = _batch(channels=3, size=16)
    augment = AugmentConfig(**{mode: 1.0})
    x, targets = BatchTransform(16, (0.5,), (0.25,), 3, 3, augment).train()(images, labels)
    assert x.shape == (6, 3, 16, 16)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    assert ((targets > 0).sum(1) <= 2).all() and (targets.max(1).values < 1).any()


def test_full_recipe_runs_and_randaugment_needs_rgb() -> None:
    images, labels = _batch(channels=1, size=16)
    paper = AugmentConfig(0.08, 0.5, 2, 9, 0.25, 0.8, 1.0, 0.1)
    x, _ = BatchTransform(16, (0.5,), (0.25,), 3, 3, paper).train()(images, labels)
    assert x.shape == (6, 3, 16, 16) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="in_chans=3"):
        BatchTransform(16, (0.5,), (0.25,), 3, 1, paper)
