"""Effective receptive fields (the RepLKNet / SLaK procedure), behind ``shiftwise erf``.

For each image ``x [1, 3, S, S]`` and each model (in eval mode):

1. ``F = model.forward_features(x)`` -- the last stage's map ``[1, C, h, w]``, before pooling,
   final norm and head;
2. ``s = sum_c ReLU(F[0, c, h // 2, w // 2])`` -- the central output pixel, with the ReLU of
   the official SLaK / SW scripts (only channels that fire count);
3. ``g = ds / dx`` and ``map = sum_RGB ReLU(g)`` ``[S, S]`` -- positive contributions, again as
   in the official scripts;
4. maps with NaN are skipped, the others are averaged over images.

Then ``A = log10(map + 1) / max`` (:func:`normalise_erf`) is drawn as a heatmap, and the
*high-contribution area ratio* at ``t`` (:func:`area_ratios`) is the area of the smallest
centred square (side ``2i + 1``, ``i = 0, 1, ...``; clipped to the image) holding more than
a share ``t`` of ``sum(A)``, as a fraction of the image area. A small ratio at ``t = 20%``
with a large one at ``t = 99%`` is the large-kernel signature: a central peak plus
contributions from far away. Note that ``log10(map + 1)`` is close to linear when gradients
are tiny (random or early weights), so ratios of untrained models are not comparable with
the papers' figures of trained ones.

Images: ``bundled`` (validation images of the bundled data set, resized), a directory of
pictures (any format Pillow reads, searched recursively) or ``noise`` (uniform random).
All are resized to ``S x S`` (bicubic) and normalised with the ImageNet mean and std. The
papers use S = 1024 with 50 ImageNet images; on a CPU 256-512 and a few images are practical.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from shiftwise.errors import MissingFileError, UsageError
from shiftwise.io import atomic_write, check_regular_file, read_regular_file
from shiftwise.models import create_model
from shiftwise.models.weights import model_from_weights

__all__ = [
    "PROCEDURE",
    "THRESHOLDS",
    "ErfComparison",
    "accumulate_erf",
    "area_ratios",
    "compare_erfs",
    "erf_of_image",
    "image_files",
    "iter_images",
    "normalise_erf",
    "plot_erf",
]

logger = logging.getLogger(__name__)

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
PROCEDURE = (
    "RepLKNet/SLaK: s = sum_c ReLU(F[c, h//2, w//2]) of the last stage map; "
    "map = sum_RGB ReLU(ds/dx) averaged over images; A = log10(map + 1) / max; "
    "area ratio = smallest centred square holding more than t of sum(A), / image area"
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def erf_of_image(features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Contribution map ``[S, S]`` of one image ``x [1, 3, S, S]`` (steps 1-3 of the module doc).

    ``features`` maps ``[1, 3, S, S]`` to the last feature map ``[1, C, h, w]``.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise UsageError(f"x: expected one image [1, 3, S, S], got shape {tuple(x.shape)}")
    x = x.detach().clone().requires_grad_(True)
    out = features(x)
    if out.dim() != 4:
        raise UsageError(
            f"features: expected a feature map [1, C, h, w] (before pooling), got shape "
            f"{tuple(out.shape)}"
        )
    height, width = out.shape[-2:]
    score = F.relu(out[0, :, height // 2, width // 2]).sum()
    (grad,) = torch.autograd.grad(score, x)
    return F.relu(grad[0]).sum(0)


def accumulate_erf(
    features: Callable[[torch.Tensor], torch.Tensor],
    images: Iterable[torch.Tensor],
    progress: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """Average of :func:`erf_of_image` over ``images`` (NaN maps skipped) and the count used."""
    total: torch.Tensor | None = None
    count = 0
    for image in images:
        contribution = erf_of_image(features, image).detach().double()
        if progress is not None:
            progress()
        if torch.isnan(contribution).any():
            logger.warning("skipping an image whose ERF map has NaN")
            continue
        total = contribution if total is None else total + contribution
        count += 1
    if total is None:
        raise UsageError("images: no image gave a finite ERF map (none given, or all NaN)")
    return total / count, count


def normalise_erf(contribution: torch.Tensor | np.ndarray) -> np.ndarray:
    """``A = log10(map + 1) / max(log10(map + 1))`` as float64 ``[S, S]`` (all zeros stay 0)."""
    values = np.log10(np.asarray(contribution, dtype=np.float64) + 1.0)
    peak = values.max()
    return values / peak if peak > 0 else values


def area_ratios(
    attribution: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> dict[str, dict[str, float]]:
    """High-contribution area ratios of a non-negative map ``[H, W]``.

    For each ``t``: the smallest ``i >= 0`` whose centred square (rows ``H//2 - i ..
    H//2 + i``, columns likewise, clipped to the map) holds more than ``t`` of the total, and
    ``{"side": 2i + 1, "ratio": clipped square area / (H * W)}``. Keys are ``"20%"`` etc.
    ``t`` must lie in ``(0, 1)``.
    """
    values = np.asarray(attribution, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise UsageError(f"attribution: expected a non-empty 2-D map, got shape {values.shape}")
    if (values < 0).any() or not np.isfinite(values).all():
        raise UsageError("attribution: expected finite non-negative values")
    total = values.sum()
    if total <= 0:
        raise UsageError("attribution: the map sums to zero, no share can be computed")
    height, width = values.shape
    integral = np.zeros((height + 1, width + 1))
    integral[1:, 1:] = values.cumsum(0).cumsum(1)
    cy, cx = height // 2, width // 2
    radii = np.arange(max(cy, cx, height - 1 - cy, width - 1 - cx) + 1)
    top, bottom = np.maximum(cy - radii, 0), np.minimum(cy + radii + 1, height)
    left, right = np.maximum(cx - radii, 0), np.minimum(cx + radii + 1, width)
    sums = (
        integral[bottom, right]
        - integral[top, right]
        - integral[bottom, left]
        + integral[top, left]
    )
    shares = sums / total
    areas = (bottom - top) * (right - left)
    result = {}
    for t in thresholds:
        if not 0.0 < t < 1.0:
            raise UsageError(f"thresholds: expected values in (0, 1), got {t}")
        i = int(np.argmax(shares > t)) if (shares > t).any() else len(radii) - 1
        result[f"{round(t * 100)}%"] = {
            "side": int(2 * i + 1),
            "ratio": float(areas[i] / (height * width)),
        }
    return result


def _normalise(images: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, 3, h, w]`` in ``[0, 1]`` -> ``[N, 3, size, size]`` bicubic, ImageNet-normalised."""
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)
        images = images.clamp(0.0, 1.0)
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    return (images - mean) / std


def image_files(directory: Path) -> list[Path]:
    """The pictures under ``directory`` (searched recursively, sorted), each a regular file."""
    if not directory.is_dir():
        raise MissingFileError(f"--images: expected a directory of pictures, got {directory}")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    files = [check_regular_file(p, "--images") for p in files if not p.is_dir()]
    if not files:
        raise MissingFileError(
            f"--images: no pictures ({', '.join(IMAGE_SUFFIXES)}) found under {directory}"
        )
    return files


def iter_images(source: str, count: int, size: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """Yield ``count`` normalised images ``[1, 3, size, size]`` from ``source``.

    ``source`` is ``"bundled"``, ``"noise"`` or a directory of pictures (fewer than ``count``
    if the directory holds fewer).
    """
    if count < 1:
        raise UsageError(f"--num-images: expected an integer >= 1, got {count}")
    if size < 1:
        raise UsageError(f"--size: expected an integer >= 1, got {size}")
    if source == "noise":
        generator = torch.Generator().manual_seed(seed)
        for _ in range(count):
            yield _normalise(torch.rand(1, 3, size, size, generator=generator), size)
    elif source == "bundled":
        from shiftwise.data import load_bundled

        arrays = load_bundled()["val_images"][:count]
        for array in arrays:
            image = torch.from_numpy(np.ascontiguousarray(array)).float().div(255.0)
            if image.shape[0] == 1:
                image = image.expand(3, -1, -1)
            yield _normalise(image.unsqueeze(0), size)
    else:
        for path in image_files(Path(source))[:count]:
            rgb = _read_picture(path)
            image = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
            yield _normalise(image, size)


def _read_picture(path: Path) -> np.ndarray:
    """The picture at ``path`` as float32 RGB ``[H, W, 3]`` in ``[0, 1]``; a file that is not
    a regular file or not a readable picture gets one :class:`UsageError` naming it."""
    from PIL import Image, UnidentifiedImageError

    data = read_regular_file(path, "--images")
    try:
        with Image.open(BytesIO(data)) as picture:
            return np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"--images: {str(path)!r} is not a readable picture ({reason})") from None


def build_model(name: str, path: Path | None, layer_scale: float | None) -> nn.Module:
    """Model ``name`` with the weights of ``path`` (``None``: random init).

    ``path`` may be a ``shiftwise train`` checkpoint (``checkpoint.pt`` or its safetensors:
    the model is rebuilt with its recorded classes, input channels and width), a converted
    official checkpoint or any safetensors state dict of the model; loading is strict.
    """
    if path is None:
        kwargs = {} if layer_scale is None else {"layer_scale_init": layer_scale}
        return create_model(name, **kwargs)
    return model_from_weights(path, name, flag="--checkpoint")[0]


def _match_channels(image: torch.Tensor, in_chans: int) -> torch.Tensor:
    """An RGB image ``[1, 3, S, S]`` as ``in_chans`` channels (1: channel mean)."""
    if in_chans == image.shape[1]:
        return image
    if in_chans == 1:
        return image.mean(dim=1, keepdim=True)
    raise UsageError(f"--models: a model with {in_chans} input channels cannot take RGB images")


def plot_erf(maps: dict[str, np.ndarray], tables: dict[str, Any], path: Path, title: str) -> None:
    """Heatmaps of the normalised maps side by side, area ratios in the panel titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4.6), squeeze=False)
    for ax, (name, values) in zip(axes[0], maps.items(), strict=True):
        image = ax.imshow(values, cmap="inferno", vmin=0.0, vmax=1.0, interpolation="nearest")
        ratios = tables[name]
        ax.set_title(
            f"{name}\nr20 {ratios['20%']['ratio']:.3f}  r50 {ratios['50%']['ratio']:.3f}  "
            f"r99 {ratios['99%']['ratio']:.3f}",
            fontsize=10,
        )
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png = BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, png.getvalue())


@dataclass(frozen=True)
class ErfComparison:
    """ERFs of several models on the same images, by model name: the normalised maps
    ``A [S, S]``, their :func:`area_ratios`, the images used (finite maps) and where the
    weights came from (a path or ``"random init"``)."""

    maps: dict[str, np.ndarray]
    tables: dict[str, dict[str, dict[str, float]]]
    counts: dict[str, int]
    weights: dict[str, str]


def compare_erfs(
    names: Sequence[str],
    images: Sequence[torch.Tensor],
    device: torch.device,
    checkpoints: Mapping[str, Path] | None = None,
    layer_scale: float | None = None,
    seed: int = 0,
) -> ErfComparison:
    """The ERF of each model of ``names`` over ``images`` (``[1, 3, S, S]`` each, e.g. from
    :func:`iter_images`), in eval mode on ``device``.

    A model with a path in ``checkpoints`` loads it (:func:`build_model`); the others are
    random init seeded by ``seed`` (``layer_scale``: their initial block layer scale). RGB
    images are averaged to one channel for a 1-channel model.
    """
    checkpoints = dict(checkpoints or {})
    maps, tables, counts, weights = {}, {}, {}, {}
    for name in names:
        torch.manual_seed(seed)
        model = build_model(name, checkpoints.get(name), layer_scale)
        in_chans = next(model.parameters()).shape[1]
        if name in checkpoints:
            weights[name] = str(checkpoints[name])
        else:
            weights[name] = "random init"
            logger.warning("%s: no checkpoint, random init (demonstration only)", name)
        model = model.to(device).eval()
        with tqdm(total=len(images), desc=f"erf {name}", leave=False) as bar:
            contribution, counts[name] = accumulate_erf(
                model.forward_features,
                (_match_channels(image, in_chans).to(device) for image in images),
                bar.update,
            )
        maps[name] = normalise_erf(contribution.cpu())
        tables[name] = area_ratios(maps[name])
    return ErfComparison(maps, tables, counts, weights)
