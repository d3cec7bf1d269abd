"""The study's figures decode as PNGs of the size they state."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from shiftwise.study import parse_grid, summary_rows
from shiftwise.study.plots import (
    ablation_series,
    plot_ablations,
    plot_accuracy_vs_time,
    plot_curves,
)

GRID = parse_grid({
    "seeds": [0, 1, 2],
    "runs": [
        {"name": "sw", "data": "bundled", "groups": ["paths", "ghost"], "setting": "default"},
        {"name": "sw-1path", "data": "bundled", "groups": ["paths"], "setting": "1 path"},
        {"name": "cnx", "data": "fashion-mnist"},
    ],
})  # fmt: skip


def _results() -> list[dict]:
    results = []
    for index, entry in enumerate(GRID.entries):
        data = entry.options["data"]
        for seed in entry.seeds:
            top1 = 60.0 + 5 * index + seed
            results.append({
                "entry": entry.name, "seed": seed, "model": "m", "data": data, "epochs": 2,
                "top1": top1, "training_seconds": 10.0 + index + seed,
                "images_per_second": 100.0, "params": 1.0, "macs": 1.0, "stages": [],
                "val_top1": [top1 - 10, top1],
            })  # fmt: skip
    return results


def _decoded_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()  # decodes every pixel
        assert image.format == "PNG"
        return image.size


def test_plots_decode_at_their_stated_size(tmp_path: Path) -> None:
    results = _results()
    rows = summary_rows(GRID, results)
    figures = [
        plot_accuracy_vs_time(rows, results, tmp_path / "time.png"),
        plot_curves(rows, results, tmp_path / "curves.png"),
        plot_ablations(rows, tmp_path / "ablations.png"),
    ]
    sizes = {}
    for path, size in figures:
        assert _decoded_size(path) == size
        sizes[path.stem] = size
    # one panel per data set (2) and per ablation axis (paths, ghost)
    assert sizes["time"] == sizes["curves"] == sizes["ablations"] == (1000, 400)


def test_ablation_series_are_each_epoch_then_final() -> None:
    paths = [row for row in summary_rows(GRID, _results()) if "paths" in row["groups"]]
    (epoch1, means1, halves1), (final, means, halves) = ablation_series(paths)
    assert (epoch1, final) == ("after epoch 1", "final")
    assert means1 == [51.0, 56.0] and means == [61.0, 66.0]  # seeds 0-2: +1 on average
    half = paths[0]["top1_ci95_high"] - 61.0  # t(0.975, 2) * 1 / sqrt(3)
    assert halves1 == pytest.approx([half] * 2) and halves == pytest.approx([half] * 2)
    # rows of different epochs: the final top-1 alone
    uneven = [paths[0], {**paths[1], "top1_by_epoch": paths[1]["top1_by_epoch"][:1]}]
    assert [label for label, *_ in ablation_series(uneven)] == ["final"]


def test_no_ablation_plot_without_axes(tmp_path: Path) -> None:
    grid = parse_grid({"seeds": [0], "runs": [{"name": "a"}]})
    rows = summary_rows(grid, [{**_results()[0], "entry": "a"}])
    assert plot_ablations(rows, tmp_path / "a.png") is None
    assert not (tmp_path / "a.png").exists()
    path, size = plot_curves(rows, [{**_results()[0], "entry": "a"}], tmp_path / "c.png")
    assert _decoded_size(path) == size == (500, 400)


def test_report_of_single_seeds_is_strict_json_and_markdown(tmp_path: Path) -> None:
    import json

    from shiftwise.study import write_report

    results = [r for r in _results() if r["seed"] == 0]
    paths = write_report(tmp_path, GRID, results)

    def refuse(constant: str):
        raise ValueError(f"not strict JSON: {constant}")

    summary = json.loads(paths["json"].read_text(), parse_constant=refuse)
    assert [row["top1_std"] for row in summary["configurations"]] == [None, None, None]
    assert (
        "| sw | m | bundled | 2 | 1 | 60.00 ± n/a | n/a to n/a |" in paths["markdown"].read_text()
    )
    assert {"accuracy_vs_time", "curves", "ablations"} <= paths.keys()
