"""The papers' per-image crops (timm's ``create_transform``), checked against timm itself.

Evaluation: the tensors of an ImageFolder validation set equal timm's
``create_transform(**resolve_data_config(model=m))`` output on the same files (the same
levels; 1/255 is the bound promised, equality is what holds).
Training: the random resized crops follow the distribution of timm's
``RandomResizedCropAndInterpolation`` (two-sample Kolmogorov-Smirnov tests, fixed seeds), are
drawn over the whole image, and their pixels are torchvision's ``resized_crop``.
"""

from __future__ import annotations

import math
import random
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from shiftwise.data import load_data
from shiftwise.data.transforms import (
    DRAFT_MARGIN,
    FULL_RESIZE_LIMIT,
    EvalCrop,
    TrainCrop,
    decode,
)
from shiftwise.errors import UsageError
from shiftwise.models import create_model

SIZES = [(500, 375), (375, 500), (224, 224), (1000, 300), (97, 131), (257, 256), (1024, 768)]
SIZES += [(120, 900)]  # tall, 7.5:1


def _photo(width: int, height: int, seed: int = 0, noise: float = 12.0) -> Image.Image:
    """A smooth RGB picture with edges and noise (what JPEG and bicubic resizing see)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [
        128 + 60 * np.sin(xx / 9.0) + 0.05 * yy,
        120 + 70 * np.cos(yy / 13.0),
        ((xx // 16 + yy // 16) % 2) * 120 + 60,
    ]
    pixels = np.stack(planes, -1) + rng.normal(0, noise, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _folder(root: Path, sizes, formats=("JPEG", "PNG"), modes=("RGB", "L")) -> list[Path]:
    """``root/{train,val}/a/*`` holding one file per size, format and mode; the val paths."""
    paths = []
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
    for i, (width, height) in enumerate(sizes):
        for fmt in formats:
            for mode in modes:
                name = f"{i}-{width}x{height}-{mode}.{'jpg' if fmt == 'JPEG' else 'png'}"
                image = _photo(width, height, seed=i).convert(mode)
                image.save(root / "val" / "a" / name, fmt, quality=90)
                paths.append(root / "val" / "a" / name)
    _photo(40, 30).save(root / "train" / "a" / "0.png")
    return sorted(paths)


@pytest.mark.parametrize("name", ["sw_tiny", "slak_atto"])
def test_eval_tensors_equal_timms_transform(name: str, tmp_path: Path) -> None:
    timm_data = pytest.importorskip("timm.data")
    model = create_model(name, width_factor=0.125)  # the pretrained_cfg of the full model
    config = timm_data.resolve_data_config(model=model)
    assert config["interpolation"] == "bicubic" and config["crop_mode"] == "center"
    assert config["crop_pct"] == (0.875 if name == "sw_tiny" else 1.0)
    timm_transform = timm_data.create_transform(**config)
    size = config["input_size"][-1]
    paths = _folder(tmp_path, SIZES)
    bundle = load_data(str(tmp_path), image_size=size, crop_pct=config["crop_pct"])
    mean = torch.tensor(config["mean"]).view(3, 1, 1)
    std = torch.tensor(config["std"]).view(3, 1, 1)
    assert [path for path, _ in bundle.val.samples] == paths
    for index, path in enumerate(paths):
        ours, label = bundle.val[index]
        assert label == 0 and ours.shape == (3, size, size) and ours.dtype == torch.uint8
        with Image.open(path) as image:
            theirs = timm_transform(image.convert("RGB")) * std + mean  # timm's loader: RGB
        difference = (ours.float() / 255 - theirs).abs().max().item()
        assert difference <= 1e-6, (path.name, difference * 255)  # the same levels


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(1, 300),
    aspect=st.floats(1 / 8, 8),
    size=st.integers(8, 64),
    crop_pct=st.floats(0.5, 1.0),
)
def test_eval_crop_is_torchvisions_resize_then_centre_crop(width, aspect, size, crop_pct) -> None:
    """Any image shape up to 8:1 and any crop_pct: exactly timm's Resize + CenterCrop."""
    transforms = pytest.importorskip("torchvision.transforms")
    image = _photo(width, max(1, round(width * aspect)), noise=30.0)
    resize = transforms.Resize(
        math.floor(size / crop_pct), interpolation=transforms.InterpolationMode.BICUBIC
    )
    theirs = np.asarray(transforms.CenterCrop(size)(resize(image)))
    ours = np.asarray(EvalCrop(size, crop_pct)(image))
    assert ours.shape == (size, size, 3) and np.array_equal(ours, theirs)


def test_eval_crop_sizes_and_extreme_strips() -> None:
    """A 400x200 image at 224 / 0.875 is resized to 512x256 (then its centre 224 kept); a
    2x3000 strip is not resized whole (it would be 256 x 384,000) yet gives its centre."""
    crop = EvalCrop(224, 0.875)
    assert crop.resized_size(400, 200) == (512, 256)
    assert crop.resized_size(200, 401) == (256, 513)
    rows = np.repeat(np.arange(3000, dtype=np.float64)[:, None] * 255 / 2999, 2, axis=1)
    strip = Image.fromarray(rows.astype(np.uint8)).convert("RGB")  # dark top, bright bottom
    assert FULL_RESIZE_LIMIT * 224**2 < 256 * 384_000
    centre = np.asarray(EvalCrop(224, 0.875)(strip), dtype=np.float64)
    assert centre.shape == (224, 224, 3)
    assert abs(centre.mean() - 127.5) < 1.0 and np.ptp(centre) < 2.0  # the middle rows
    for bad in (0, 1.5, -0.1):
        with pytest.raises(UsageError, match="crop_pct"):
            EvalCrop(224, bad)


def _ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def _crop_features(params, width: int, height: int) -> np.ndarray:
    """[N, 4]: area fraction, log aspect ratio, horizontal and vertical centre (fractions)."""
    p = np.asarray(params, dtype=np.float64)  # left, top, w, h
    return np.stack(
        [
            p[:, 2] * p[:, 3] / (width * height),
            np.log(p[:, 2] / p[:, 3]),
            (p[:, 0] + p[:, 2] / 2) / width,
            (p[:, 1] + p[:, 3] / 2) / height,
        ],
        axis=1,
    )


@pytest.mark.parametrize("shape", [(500, 375), (200, 600)])
def test_training_crops_follow_random_resized_crops_distribution(shape) -> None:
    """Same distribution of area, aspect and position as timm's sampler (KS at alpha 1e-3).

    Catches a uniform (not log-uniform) aspect ratio (a CDF gap of 0.07 at ratio 1), a crop
    drawn inside a centre square, or a missing fallback for the tall image."""
    transforms = pytest.importorskip("timm.data.transforms")
    width, height = shape
    n = 5000
    crop = TrainCrop(224, 0.08, hflip=0.0)
    torch.manual_seed(0)
    ours = _crop_features([crop.params(width, height) for _ in range(n)], width, height)
    random.seed(0)
    image = Image.new("RGB", shape)
    sampler = transforms.RandomResizedCropAndInterpolation.get_params
    theirs = [sampler(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)]
    theirs = _crop_features([(j, i, w, h) for i, j, h, w in theirs], width, height)
    critical = math.sqrt(-math.log(1e-3 / 2) / 2) * math.sqrt(2 / n)
    for column, what in enumerate(("area", "log aspect", "x centre", "y centre")):
        statistic = _ks_statistic(ours[:, column], theirs[:, column])
        assert statistic < critical, (what, statistic, critical)
    assert ours[:, 0].min() >= 0.08 - 0.01 and ours[:, 0].max() <= 1.0
    assert np.abs(ours[:, 1]).max() <= math.log(4 / 3) + 0.02


def test_training_crop_pixels_are_torchvisions_resized_crop() -> None:
    functional = pytest.importorskip("torchvision.transforms.functional")
    interpolation = pytest.importorskip("torchvision.transforms").InterpolationMode.BICUBIC
    image = _photo(320, 240)
    torch.manual_seed(1)
    for flip in (0.0, 1.0):
        crop = TrainCrop(48, 0.08, hflip=flip)
        for _ in range(5):
            left, top, w, h = params = crop.params(*image.size)
            ours = np.asarray(crop.apply(image, image.size, params), dtype=np.int16)
            theirs = functional.resized_crop(image, top, left, h, w, [48, 48], interpolation)
            theirs = np.asarray(theirs, dtype=np.int16)
            theirs = theirs[:, ::-1] if flip else theirs
            assert np.abs(ours - theirs).max() <= 1


def test_training_crops_come_from_the_whole_image(tmp_path: Path) -> None:
    """Red | green | blue thirds of a 600x200 photo: crops reach both sides (a crop of the
    centred 200x200 square, the old pipeline, would only ever see green)."""
    pixels = np.zeros((200, 600, 3), dtype=np.uint8)
    pixels[:, :200, 0] = pixels[:, 200:400, 1] = pixels[:, 400:, 2] = 255
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / split / "a" / "0.png")
    bundle = load_data(str(tmp_path), image_size=32, crop_scale=0.08, hflip=0.5)
    assert bundle.crops_in_workers
    torch.manual_seed(0)
    seen = np.zeros(3)
    for _ in range(60):
        image, label = bundle.train[0]
        assert image.shape == (3, 32, 32) and label == 0
        seen += (image.float().mean((1, 2)) > 200).numpy()
    assert seen[0] > 0 and seen[2] > 0 and seen[1] > 0
    plain = load_data(str(tmp_path), image_size=32)
    assert not plain.crops_in_workers
    assert torch.equal(plain.train[0][0], plain.train[0][0])  # deterministic centre crop


def test_crop_scale_one_is_the_centred_square_flipped() -> None:
    image = _photo(90, 60)
    crop = TrainCrop(30, 1.0, hflip=1.0)
    assert crop.params(90, 60) == (15, 0, 60, 60)
    expected = image.crop((15, 0, 75, 60)).resize((30, 30), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(crop(image)), np.asarray(expected)[:, ::-1])


def test_large_jpegs_are_decoded_reduced_within_the_documented_tolerance() -> None:
    """Training crops of a 2403x1801 JPEG (sides not multiples of the scales) decoded at 1/2
    or 1/4 scale (``Image.draft``) differ from a full decode's by a mean of at most 2 of 255
    levels per crop."""
    buffer = BytesIO()
    _photo(2403, 1801, noise=8.0).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    crop = TrainCrop(112, 0.08, hflip=0.0)
    full = Image.open(BytesIO(data)).convert("RGB")
    reduced = 0
    for seed in range(12):
        torch.manual_seed(seed)
        params = crop.params(2403, 1801)
        torch.manual_seed(seed)
        ours = decode(data, "RGB", crop).numpy().transpose(1, 2, 0).astype(np.float64)
        exact = np.asarray(crop.apply(full, full.size, params), dtype=np.float64)
        reduced += min(params[2:]) >= 2 * DRAFT_MARGIN * 112
        assert np.abs(ours - exact).mean() <= 2.0, seed
    assert reduced >= 3  # the reduced decode was exercised


def test_bad_training_crop_parameters_are_one_line_errors() -> None:
    for kwargs, field in (
        ({"crop_scale": 0.0}, "crop_scale"),
        ({"crop_scale": 1.5}, "crop_scale"),
        ({"ratio": (2.0, 1.0)}, "ratio"),
        ({"hflip": 2.0}, "hflip"),
        ({"interpolation": "lanczos3"}, "interpolation"),
    ):
        with pytest.raises(UsageError, match=field):
            TrainCrop(32, **kwargs)


def test_seeded_crops_depend_on_seed_epoch_and_index_only(tmp_path: Path) -> None:
    """With a seed, a sample's crop is the same whatever the workers, the read order and the
    global RNG (so a resumed run reads what the uninterrupted one did); epochs differ."""
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
    for i in range(6):
        _photo(60 + 7 * i, 45, seed=i).save(tmp_path / "train" / "a" / f"{i}.jpg")
    _photo(40, 30).save(tmp_path / "val" / "a" / "0.png")
    bundle = load_data(str(tmp_path), image_size=16, crop_scale=0.08, hflip=0.5, seed=3)

    def epoch(number: int, workers: int, order: list[int]) -> dict[int, torch.Tensor]:
        bundle.set_epoch(number)
        torch.manual_seed(len(order) * 7 + workers)  # the global RNG plays no part
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(bundle.train, order), batch_size=2, num_workers=workers
        )
        images = torch.cat([batch for batch, _ in loader])
        return dict(zip(order, images, strict=True))

    first = epoch(0, 0, list(range(6)))
    shuffled = epoch(0, 2, [5, 3, 1, 0, 2, 4])
    resumed = epoch(0, 0, [3, 4, 5])  # the rest of an epoch, after a resume
    later = epoch(1, 0, list(range(6)))
    assert all(torch.equal(first[i], shuffled[i]) for i in range(6))
    assert all(torch.equal(first[i], resumed[i]) for i in (3, 4, 5))
    assert not any(torch.equal(first[i], later[i]) for i in range(6))
