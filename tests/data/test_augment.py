"""Batched on-device preprocessing: normalisation, channel expansion, soft targets, mixing.

Each augmentation is checked against an exact property of its output relative to the plain
(eval-mode) normalised batch, so a transform applied to the wrong axis, the wrong sample, or
with its labels out of step with its pixels fails.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shiftwise.data import AugmentConfig, BatchTransform

MEAN, STD = (0.5,), (0.25,)
LOW, HIGH = (0 - MEAN[0]) / STD[0], (1 - MEAN[0]) / STD[0]  # normalised range of [0, 1] input
PAPER = AugmentConfig(0.08, 0.5, 2, 9, 0.25, 0.8, 1.0, 0.1)


def _batch(channels: int = 1, size: int = 8, n: int = 6):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator
    )
    return images, torch.arange(n) % 3


def _transform(size: int, num_classes: int, in_chans: int, **augment) -> BatchTransform:
    return BatchTransform(size, MEAN, STD, num_classes, in_chans, AugmentConfig(**augment))


def _plain(images: torch.Tensor, in_chans: int = 3) -> torch.Tensor:
    """The eval-mode output: normalised, channel-expanded, not augmented."""
    size = images.shape[-1]
    return _transform(size, 3, in_chans).eval()(images, torch.zeros(len(images)))[0]


def _is_rectangle(mask: torch.Tensor) -> bool:
    """Whether the True entries of a [H, W] mask form one axis-aligned rectangle."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    box = mask.any(1)[:, None] & mask.any(0)[None, :]
    contiguous = all(len(i) == 0 or int(i[-1] - i[0]) == len(i) - 1 for i in (rows, cols))
    return contiguous and torch.equal(mask, box)


def test_eval_mode_resizes_normalises_and_keeps_labels() -> None:
    images, labels = _batch()
    transform = BatchTransform(8, (0.5,), (0.25,), num_classes=3, in_chans=3).eval()
    x, out_labels = transform(images, labels)
    expected = ((images.float() / 255 - 0.5) / 0.25).expand(-1, 3, -1, -1)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)
    assert torch.equal(out_labels, labels)
    # Resizing interpolates within each image: a constant image stays that constant.
    constant = torch.arange(6, dtype=torch.uint8).mul(40).view(6, 1, 1, 1).expand(6, 1, 8, 8)
    resized = _transform(16, 3, 1).eval()(constant, labels)[0]
    assert resized.shape == (6, 1, 16, 16)
    level = (constant[:, :, :1, :1].float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(resized, level.expand_as(resized), rtol=0, atol=1e-5)


def test_train_mode_without_augmentation_is_eval_mode_with_one_hot_targets() -> None:
    images, labels = _batch(channels=3)
    x, targets = _transform(8, 3, 3).train()(images, labels)
    torch.testing.assert_close(x, _plain(images), rtol=0, atol=0)
    assert torch.equal(targets, F.one_hot(labels, 3).float())


def test_train_mode_gives_smoothed_soft_targets() -> None:
    images, labels = _batch()
    transform = BatchTransform(8, (0.5,), (0.25,), 3, 1, AugmentConfig(smoothing=0.3))
    _, targets = transform.train()(images, labels)
    assert targets.shape == (6, 3)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    torch.testing.assert_close(targets.max(1).values, torch.full((6,), 0.7 + 0.1))
    assert torch.equal(targets.argmax(1), labels)


def test_hflip_mirrors_the_width_axis_only() -> None:
    images, labels = _batch(channels=3)
    x, _ = _transform(8, 3, 3, hflip=1.0).train()(images, labels)
    torch.testing.assert_close(x.flip(-1), _plain(images), rtol=0, atol=0)


def test_crop_takes_each_output_from_its_own_image() -> None:
    # Sample i holds values in [40 i, 40 i + 30]: disjoint ranges expose any mixing of samples.
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 31, (6, 3, 16, 16), dtype=torch.uint8, generator=generator)
    images = noise + torch.arange(6, dtype=torch.uint8).mul(40).view(6, 1, 1, 1)
    torch.manual_seed(0)
    x, _ = _transform(16, 3, 3, crop_scale=0.08).train()(images, torch.zeros(6))
    plain = _plain(images)
    assert x.shape == plain.shape and not torch.allclose(x, plain)
    low, high = plain.amin((1, 2, 3), keepdim=True), plain.amax((1, 2, 3), keepdim=True)
    assert ((x >= low - 1e-5) & (x <= high + 1e-5)).all()  # interpolation stays within


@pytest.mark.parametrize("seed", range(3))
def test_erasing_zeroes_one_rectangle_of_bounded_area(seed: int) -> None:
    images, labels = _batch(channels=3, size=32)
    torch.manual_seed(seed)
    x, _ = _transform(32, 3, 3, reprob=1.0).train()(images, labels)
    plain = _plain(images)
    for sample, reference in zip(x, plain, strict=True):
        erased = (sample != reference).any(0)
        assert _is_rectangle(erased)
        assert (sample[:, erased] == 0).all()  # erased to the normalised mean
        assert 0.02 - 0.01 <= erased.float().mean() <= 0.33 + 0.03  # kornia's scale, rounded


def test_mixup_images_are_the_convex_combination_stated_by_the_targets() -> None:
    images = _batch(channels=3, size=16)[0]
    labels = torch.arange(6)  # one class per sample: targets[i, j] is sample j's weight in i
    torch.manual_seed(0)
    x, targets = _transform(16, 6, 3, mixup=1.0).train()(images, labels)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    assert ((targets > 0).sum(1) <= 2).all() and (targets.max(1).values < 1).any()
    expected = torch.einsum("bk,kchw->bchw", targets, _plain(images))
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)


def test_cutmix_pastes_one_rectangle_whose_area_is_the_partner_weight() -> None:
    images = _batch(channels=3, size=16)[0]
    labels = torch.arange(6)
    torch.manual_seed(0)
    x, targets = _transform(16, 6, 3, cutmix=1.0).train()(images, labels)
    plain = _plain(images)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    assert (targets.max(1).values < 1).any()
    for i in range(6):
        others = [j for j in targets[i].nonzero().flatten().tolist() if j != i]
        assert len(others) <= 1
        if not others:  # paired with itself
            assert torch.equal(x[i], plain[i])
            continue
        partner = others[0]
        pasted = (x[i] == plain[partner]).all(0) & (x[i] != plain[i]).any(0)
        assert _is_rectangle(pasted)
        torch.testing.assert_close(x[i], torch.where(pasted, plain[partner], plain[i]))
        assert pasted.float().mean().item() == pytest.approx(targets[i, partner].item())


@pytest.mark.parametrize("seed", range(3))
def test_randaugment_keeps_shape_dtype_and_range(seed: int) -> None:
    images, labels = _batch(channels=3, size=16)
    torch.manual_seed(seed)
    x, _ = _transform(16, 3, 3, randaug_n=3, randaug_m=9).train()(images, labels)
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= LOW - 1e-5 and x.max() <= HIGH + 1e-5


def test_full_recipe_is_deterministic_under_a_seed_and_stays_in_range() -> None:
    images, labels = _batch(channels=1, size=16)
    transform = BatchTransform(16, MEAN, STD, 3, 3, PAPER).train()
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(transform(images, labels))
    (x, targets), (x_again, targets_again), (x_other, _) = runs
    assert torch.equal(x, x_again) and torch.equal(targets, targets_again)
    assert not torch.equal(x, x_other)
    assert x.shape == (6, 3, 16, 16)
    assert x.min() >= LOW - 1e-5 and x.max() <= HIGH + 1e-5  # erasing and mixing stay within
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    with pytest.raises(ValueError, match="in_chans=3"):
        BatchTransform(16, MEAN, STD, 3, 1, PAPER)


def test_crops_done_in_workers_are_not_repeated_on_the_device() -> None:
    """ImageFolder training images arrive cropped and flipped (``crops_in_workers``): with
    only crop_scale and hflip configured the device leaves the pixels as they are."""
    images, labels = _batch(channels=3, size=16)
    augment = AugmentConfig(crop_scale=0.08, hflip=1.0)
    transform = BatchTransform(16, MEAN, STD, 3, 3, augment, crops_in_workers=True).train()
    torch.manual_seed(0)
    x, _ = transform(images, labels)
    torch.testing.assert_close(x, _plain(images), rtol=0, atol=1e-6)
    on_device = BatchTransform(16, MEAN, STD, 3, 3, augment).train()
    assert not torch.allclose(on_device(images, labels)[0], _plain(images))
