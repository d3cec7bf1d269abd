"""What a study's summaries compare: budget curves, the time to reach an accuracy with the
large-kernel verdict, and ablation settings against their default with the seeds needed."""

from __future__ import annotations

import pytest
from PIL import Image

from shiftwise.study import parse_grid, seeds_to_separate, summary_rows
from shiftwise.study.aggregate import budget_curves, budget_verdicts, separations, time_to_reach
from shiftwise.study.plots import plot_budget_curves
from shiftwise.study.report import format_markdown

# top-1 of seeds 0, 1, 2 and training seconds per budget (epochs), per model
MEASURED = {
    ("sw_atto", 1): ([60.0, 62.0, 64.0], 30.0),
    ("sw_atto", 2): ([80.0, 82.0, 84.0], 60.0),
    ("sw_atto", 4): ([90.0, 91.0, 92.0], 120.0),
    ("convnext_atto", 1): ([40.0, 41.0, 42.0], 15.0),
    ("convnext_atto", 2): ([50.0, 51.0, 52.0], 30.0),
    ("convnext_atto", 4): ([70.0, 71.0, 72.0], 60.0),
    ("convnext_atto", 8): ([85.0, 86.0, 87.0], 120.0),
}

GRID = parse_grid({
    "seeds": [0, 1, 2],
    "defaults": {"data": "bundled", "width_factor": 0.5},
    "runs": [
        {"name": f"{model}-e{epochs}", "model": model, "epochs": epochs}
        for model, epochs in MEASURED
    ] + [
        {"name": "sw-1path", "model": "sw_atto", "epochs": 4, "groups": ["paths"],
         "model_kwargs": {"operator_kwargs": {"n_paths": 1}}, "setting": "1 path"},
        {"name": "sw-far", "model": "sw_atto", "epochs": 4, "groups": ["paths"],
         "model_kwargs": {"operator_kwargs": {"n_paths": 3}}, "setting": "3 paths"},
        {"name": "sw-close", "model": "sw_atto", "epochs": 4, "groups": ["paths"],
         "model_kwargs": {"operator_kwargs": {"n_paths": 4}}, "setting": "4 paths"},
    ],
})  # fmt: skip


def _results() -> list[dict]:
    measured = {
        **{f"{m}-e{e}": v for (m, e), v in MEASURED.items()},
        "sw-1path": ([89.0, 91.5, 94.0], 120.0),
        "sw-far": ([40.0, 41.0, 42.0], 120.0),
        "sw-close": ([90.0, 92.0, 94.0], 120.0),
    }
    results = []
    for entry in GRID.entries:
        top1s, seconds = measured[entry.name]
        for seed, top1 in zip(entry.seeds, top1s, strict=True):
            results.append({
                "entry": entry.name, "seed": seed, "model": entry.options["model"],
                "data": "bundled", "epochs": entry.options["epochs"], "top1": top1,
                "training_seconds": seconds, "images_per_second": 100.0, "params": 1.0,
                "macs": 1.0, "stages": [], "val_top1": [top1],
            })  # fmt: skip
    return results


ROWS = summary_rows(GRID, _results())


def test_budget_curves_join_entries_that_differ_only_in_budget() -> None:
    (curves,) = budget_curves(ROWS).values()
    assert [c["label"] for c in curves] == ["sw_atto", "convnext_atto"]
    assert [p["entry"] for p in curves[1]["points"]] == [
        "convnext_atto-e1", "convnext_atto-e2", "convnext_atto-e4", "convnext_atto-e8"
    ]  # fmt: skip
    # the ablation variants (other model_kwargs) are single points, not on a curve
    assert all(p["entry"].startswith(("sw_atto", "convnext")) for c in curves for p in c["points"])


def test_time_to_reach_interpolates_between_budgets() -> None:
    points = [{"training_seconds_mean": t, "top1_mean": a} for t, a in [(10, 50), (30, 70)]]
    assert time_to_reach(points, 60.0) == (20.0, False)
    assert time_to_reach(points, 40.0) == (10, True)  # the cheapest budget is above it
    assert time_to_reach(points, 70.0) == (30.0, False)
    assert time_to_reach(points, 71.0) is None


def test_verdict_target_is_the_best_accuracy_every_model_reaches() -> None:
    (verdict,) = budget_verdicts(ROWS)
    assert verdict["target_top1"] == pytest.approx(86.0)  # convnext's best; sw's is 91
    # sw: 82 at 60 s, 91 at 120 s -> 86 at 60 + 4/9 * 60; convnext reaches it at 120 s
    assert verdict["times"]["sw_atto"]["seconds"] == pytest.approx(60 + 4 / 9 * 60)
    assert verdict["times"]["convnext_atto"]["seconds"] == pytest.approx(120.0)
    assert verdict["fastest"] == "sw_atto" and verdict["pays"] == {"sw_atto": True}
    # one model's curve alone (the papers grid's matched ConvNeXt) is no comparison
    alone = [row for row in ROWS if row["model"] == "convnext_atto"]
    assert len(budget_curves(alone)["bundled"]) == 1 and budget_verdicts(alone) == []


def test_separations_compare_each_setting_with_the_axis_default() -> None:
    found = {s["setting"]: s for s in separations(ROWS)}
    assert set(found) == {"3 paths", "4 paths"}  # against the axis's first row, "1 path"
    far, close = found["3 paths"], found["4 paths"]
    assert far["reference"] == "1 path" and far["difference"] == pytest.approx(41 - 91.5)
    assert not far["intervals_overlap"] and far["seeds_needed"] is None
    assert close["intervals_overlap"] and close["difference"] == pytest.approx(0.5)
    assert close["seeds_needed"] == seeds_to_separate(0.5, 2.0, 2.5)


def test_report_states_the_verdict_and_the_seeds_needed(tmp_path) -> None:
    text = format_markdown(GRID, ROWS, [])
    assert "| bundled | 86.00 | sw_atto | 86.7 | yes |" in text
    assert "| bundled | 86.00 | convnext_atto | 120.0 |  |" in text
    path, (width, height) = plot_budget_curves(budget_curves(ROWS), tmp_path / "b.png")
    with Image.open(path) as image:
        assert image.size == (width, height) == (500, 400)
    needed = seeds_to_separate(0.5, 2.0, 2.5)
    assert f"| paths | 4 paths | 1 path | final | +0.50 | overlap | {needed} |" in text
    assert "| paths | 3 paths | 1 path | final | -50.50 | apart |  |" in text


def test_separations_also_compare_each_earlier_epoch() -> None:
    # both settings end at the ceiling; after epoch 1 they are apart, after epoch 2 not yet
    curves = {"default": [[70, 99, 100], [72, 98, 100], [74, 100, 100]],
              "1 path": [[50, 96, 100], [52, 99, 100], [54, 97, 100]]}  # fmt: skip
    grid = parse_grid({
        "seeds": [0, 1, 2], "defaults": {"data": "bundled", "epochs": 3},
        "runs": [{"name": name.replace(" ", "-"), "model": "sw_atto", "groups": ["paths"],
                  "setting": name} for name in curves],
    })  # fmt: skip
    results = [
        {"entry": name.replace(" ", "-"), "seed": seed, "model": "sw_atto", "data": "bundled",
         "epochs": 3, "top1": curve[-1], "training_seconds": 1.0, "images_per_second": 1.0,
         "params": 1.0, "macs": 1.0, "stages": [], "val_top1": curve}
        for name, runs in curves.items() for seed, curve in enumerate(runs)
    ]  # fmt: skip
    rows = summary_rows(grid, results)
    assert [e["mean"] for e in rows[1]["top1_by_epoch"]] == [52.0, pytest.approx(292 / 3), 100.0]
    found = {s["measure"]: s for s in separations(rows)}
    assert list(found) == ["final", "epoch 1", "epoch 2"]
    assert found["final"]["difference"] == 0 and found["final"]["seeds_needed"] is None
    assert found["epoch 1"]["difference"] == pytest.approx(-20.0)
    assert not found["epoch 1"]["intervals_overlap"]
    second = found["epoch 2"]
    assert second["difference"] == pytest.approx(292 / 3 - 99) and second["intervals_overlap"]
    assert second["seeds_needed"] == seeds_to_separate(292 / 3 - 99, 1.5275252316519468, 1.0)
    text = format_markdown(grid, rows, [])
    assert "| paths | 1 path | default | epoch 1 | -20.00 | apart |  |" in text
    assert "| paths | 1 path | default | final | +0.00 | overlap | none: equal means |" in text
