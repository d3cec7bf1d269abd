"""Images per second of one DataLoader worker: shiftwise's ImageFolder pipelines next to timm's.

A folder of generated 500x375 JPEGs (quality 90, photo-like: smooth gradients, edges and
noise; or ``--folder`` with your own ``<class>/*.jpg``) is read by each pipeline in turn,
one image at a time in this process with one torch thread, as one DataLoader worker does:

* ``shiftwise train``: :class:`shiftwise.data.datasets.ImageFolderDataset` with
  ``crop_scale=0.08, hflip=0.5`` (file read, decode, random resized crop over the whole image,
  bicubic, flip, uint8 tensor; RandAugment, erasing and mixing run batched on the device);
* ``shiftwise eval``: the same dataset with ``crop_pct=0.875`` (shorter side to 256, centre
  224, bicubic, uint8 tensor);
* ``timm train``: ``create_transform(224, is_training=True, scale=(0.08, 1), hflip=0.5,
  interpolation="bicubic", color_jitter=None)`` after ``Image.open(...).convert("RGB")`` (what
  timm's ``ImageDataset`` does): the same geometry, plus float conversion and normalisation;
* ``timm train + RandAugment``: the papers' worker pipeline (``auto_augment="rand-m9-inc1"``,
  ``re_prob=0.25``), which shiftwise moves to the device. The papers' magnitude noise
  (``mstd0.5``) is left out: with pillow 11 timm's posterize then raises on a magnitude
  drawn above 10 ("bits must be between 1 and 8"); the cost per image is the same;
* ``timm eval``: ``create_transform(**resolve_data_config(pretrained_cfg=sw_tiny's))``.

Each round runs every pipeline once over all images (the pipelines interleaved, so machine
noise hits them alike); a pipeline's figure is images / round time, reported as the median
and quartiles over ``--repeats`` rounds. The JSON records the load average before and after,
the cores other processes used meanwhile (``machine_load``) and warns above 0.5: measure on
an idle machine.

timm needs torchvision, whose registry build lacks its compiled ops next to a CPU-only torch:
this script defines the two op schemas timm's import needs first (as ``tests/conftest.py``
does; benchmark-only, never in the library).

Run: ``python benchmarks/bench_input.py [--images 200] [--repeats 7] [--folder DIR]
[--name input] [--out DIR]`` -> ``DIR/NAME.json``, ``DIR/NAME.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import random
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from machine_load import load_average, load_warnings, recording_other_cpu, start_warnings
from PIL import Image

from shiftwise.benchmarking.environment import describe_environment, write_json
from shiftwise.data.datasets import ImageFolderDataset
from shiftwise.models.registry import pretrained_cfg

logger = logging.getLogger("bench_input")

RESULTS = Path(__file__).parent / "results"
SIZE = 224
_TORCHVISION_SCHEMAS: list[Any] = []  # kept alive: the op schemas timm's import needs


def import_timm() -> Any:
    """timm's data module, or None. Where torchvision is a CUDA build next to a CPU-only
    torch, first defines the two op schemas its import registers fake kernels for."""
    spec = importlib.util.find_spec("torchvision")
    if spec is not None and spec.origin is not None and torch.version.cuda is None:
        version = Path(spec.origin).with_name("version.py")
        text = version.read_text() if version.is_file() else ""
        if re.search(r"__version__ = '[^']*\+cu\d+'", text) and not _TORCHVISION_SCHEMAS:
            library = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _TORCHVISION_SCHEMAS.append(library)
    try:
        import timm.data
    except (ImportError, RuntimeError):
        return None
    return timm.data


def make_folder(root: Path, count: int) -> Path:
    """``root/a/*.jpg``: ``count`` photo-like 500x375 JPEGs (quality 90), seeded."""
    folder = root / "a"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float64)
    for i in range(count):
        fx, fy = rng.uniform(5, 40, size=2)
        planes = [
            128 + 60 * np.sin(xx / fx + i) + 0.1 * yy,
            120 + 70 * np.cos(yy / fy),
            ((xx // rng.integers(8, 40) + yy // 16) % 2) * 120 + 60,
        ]
        pixels = np.stack(planes, -1) + rng.normal(0, 10, (375, 500, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        image.save(folder / f"{i:05d}.jpg", "JPEG", quality=90)
    return root


def pipelines(root: Path, timm_data: Any) -> dict[str, Callable[[int], Any]]:
    """Name -> function reading image ``index`` of ``root`` through that pipeline."""
    train = ImageFolderDataset(root, SIZE, crop_scale=0.08, hflip=0.5)
    evaluation = ImageFolderDataset(root, SIZE, crop_pct=0.875)
    runs: dict[str, Callable[[int], Any]] = {
        "shiftwise train": train.__getitem__,
        "shiftwise eval": evaluation.__getitem__,
    }
    if timm_data is None:
        logger.warning("timm does not import here: only shiftwise's pipelines are measured")
        return runs
    paths = [path for path, _ in train.samples]
    geometry = dict(scale=(0.08, 1.0), hflip=0.5, interpolation="bicubic", color_jitter=None)
    transforms = {
        "timm train": timm_data.create_transform(SIZE, is_training=True, **geometry),
        "timm train + RandAugment": timm_data.create_transform(
            SIZE, is_training=True, auto_augment="rand-m9-inc1", re_prob=0.25, **geometry
        ),
        "timm eval": timm_data.create_transform(
            **timm_data.resolve_data_config(pretrained_cfg=pretrained_cfg("sw_tiny"))
        ),
    }

    def timm_reader(transform: Callable) -> Callable[[int], Any]:
        def read(index: int) -> Any:
            with open(paths[index], "rb") as handle:  # timm's ImageDataset reader
                image = Image.open(handle).convert("RGB")
            return transform(image)

        return read

    runs.update({name: timm_reader(transform) for name, transform in transforms.items()})
    return runs


def measure(runs: dict[str, Callable[[int], Any]], count: int, repeats: int) -> dict[str, Any]:
    """Images per second of each pipeline over ``repeats`` interleaved rounds of ``count``
    images (after one warm-up image each)."""
    order = list(range(count))
    random.Random(0).shuffle(order)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for read in runs.values():
        read(order[0])
    for _ in range(repeats):
        for name, read in runs.items():
            start = time.perf_counter()
            for index in order:
                read(index)
            rates[name].append(count / (time.perf_counter() - start))
    summary = {}
    for name, values in rates.items():
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        summary[name] = {
            "images_per_s_median": round(float(median), 2),
            "images_per_s_q1": round(float(q1), 2),
            "images_per_s_q3": round(float(q3), 2),
            "images_per_s": [round(v, 2) for v in values],
        }
    return summary


def plot(rows: dict[str, Any], path: Path, title: str) -> None:
    names = list(rows)
    medians = [rows[n]["images_per_s_median"] for n in names]
    errors = [
        [m - rows[n]["images_per_s_q1"] for n, m in zip(names, medians, strict=True)],
        [rows[n]["images_per_s_q3"] - m for n, m in zip(names, medians, strict=True)],
    ]
    colors = ["tab:blue" if n.startswith("shiftwise") else "tab:gray" for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bars = ax.barh(names, medians, xerr=errors, color=colors, capsize=3)
    ax.bar_label(bars, fmt="%.0f", fontsize=8, padding=6)
    ax.invert_yaxis()
    ax.set_xlabel("images / s per worker (median, quartiles)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="generated JPEGs")
    parser.add_argument("--repeats", type=int, default=7, help="rounds per pipeline")
    parser.add_argument("--folder", type=Path, default=None, help="<class>/*.jpg to read")
    parser.add_argument("--name", default="input")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker
    timm_data = import_timm()
    payload: dict[str, Any] = {
        "environment": describe_environment(torch.device("cpu")),
        "timm": None if timm_data is None else __import__("timm").__version__,
        "pillow": Image.__version__,
        "warnings": start_warnings(load_average()),
    }
    with tempfile.TemporaryDirectory() as scratch:
        root = args.folder or make_folder(Path(scratch), args.images)
        runs = pipelines(root, timm_data)
        count = len(ImageFolderDataset(root, SIZE))
        record: dict[str, Any] = {"load_average_before": load_average()}
        with recording_other_cpu(record):
            rows = measure(runs, count, args.repeats)
        record["load_average_after"] = load_average()
    payload["settings"] = {
        "images": count,
        "folder": str(args.folder) if args.folder else "generated 500x375 JPEG, quality 90",
        "repeats": args.repeats,
        "size": SIZE,
        "torch_threads": 1,
    }
    payload["load"] = record
    payload["warnings"] += load_warnings("input pipelines", record)
    payload["rows"] = rows
    for warning in payload["warnings"]:
        logger.warning(warning)
    for name, row in rows.items():
        print(
            f"{name:26s} {row['images_per_s_median']:8.1f} images/s "
            f"(quartiles {row['images_per_s_q1']:.1f}-{row['images_per_s_q3']:.1f})"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", payload)
    title = f"one worker, {count} images ({payload['settings']['folder']}), {SIZE} px"
    plot(rows, args.out / f"{args.name}.png", title)


if __name__ == "__main__":
    main()
