"""End to end: the ``quick`` grid through ``shiftwise study``, and a study killed mid-run
that resumes without repeating its finished runs."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

import shiftwise.training
from shiftwise.cli import main
from shiftwise.study import Progress, check_grid, estimate_grid, load_grid, run_study
from shiftwise.study.runner import RESULT_NAME, resolve_run

pytestmark = pytest.mark.slow


def test_quick_grid_end_to_end(tmp_path: Path, capsys) -> None:
    output = tmp_path / "quick"
    grid = load_grid("quick")
    # the estimate, measured now (probe runs), against the grid's real wall time just after
    estimate = estimate_grid(grid, check_grid(grid), output / "runs")
    assert all(e.runs_left == 2 and e.source == "probe" for e in estimate.entries.values())
    started = time.perf_counter()
    assert main(["study", "quick", "--output", str(output), "--no-progress"]) == 0
    wall = time.perf_counter() - started
    assert estimate.total_seconds / 2 <= wall <= 2 * estimate.total_seconds
    summary = json.loads((output / "summary.json").read_text())
    epochs = {r["run_id"]: r["epochs"] for r in summary["runs"]}
    for entry, seed in grid.runs():
        name = resolve_run(entry, seed, epochs[entry.run_id(seed)])[3]
        record = json.loads((output / "runs" / name / RESULT_NAME).read_text())
        assert record["seed"] == seed and len(record["val_top1"]) == record["epochs"]
    summary = json.loads((output / "summary.json").read_text())
    rows = {row["entry"]: row for row in summary["configurations"]}
    assert list(rows) == [entry.name for entry in grid.entries]
    assert all(row["n"] == 2 for row in rows.values())
    matched = rows["quick-convnext-matched"]
    sw = rows["quick-sw_atto"]
    per_epoch = (
        sum(
            r["training_seconds"] / r["epochs"]
            for r in summary["runs"]
            if r["entry"] == "quick-convnext_atto"
        )
        / 2
    )
    assert matched["epochs"] == [max(1, round(sw["training_seconds_mean"] / per_epoch))]
    assert "matched to quick-sw_atto" in matched["epochs_rule"]
    # sparse SW: non-zero counts below the dense model's, active pieces per stage reported
    sparse = rows["quick-sw-sparse"]
    assert sparse["params"] < sw["params"] and sparse["macs"] < sw["macs"]
    assert set(sparse["active_pieces"]) == {"stage0", "stage1", "stage2", "stage3"}
    assert all(0 < share < 1 for share in sparse["active_pieces"].values())
    assert rows["quick-sw_atto"]["active_pieces"] == {}
    with open(output / "summary.csv", newline="") as handle:
        assert [r["entry"] for r in csv.DictReader(handle)] == list(rows)
    markdown = (output / "summary.md").read_text()
    assert "| quick-sw-sparse |" in markdown and "SW Table 2" in markdown
    for name in ("accuracy_vs_time.png", "curves.png", "ablations.png"):
        assert (output / name).read_bytes()[:4] == b"\x89PNG"
    assert "summary:" in capsys.readouterr().out
    # a second invocation finds everything finished and trains nothing; the estimate then
    # has nothing left and measures each shape by the finished runs
    assert main(["study", "quick", "--output", str(output), "--no-progress"]) == 0
    again = estimate_grid(grid, check_grid(grid), output / "runs")
    assert again.total_seconds == 0
    assert all("finished runs" in e.source for e in again.entries.values())


GRID = """seeds = [0, 1]
[defaults]
data = "digits"
width_factor = 0.25
train_limit = 32
val_limit = 16
batch_size = 16
epochs = 2
[[runs]]
name = "tiny"
model = "convnext_atto"
"""


def test_killed_study_resumes_without_repeating_finished_runs(tmp_path: Path, monkeypatch) -> None:
    import shiftwise.training.trainer as trainer

    (tmp_path / "tiny.toml").write_text(GRID)
    grid = load_grid(str(tmp_path / "tiny.toml"))
    output = tmp_path / "study"
    real_checkpoint, written = trainer.Trainer.save_resume_point, []

    def killed_after_third_checkpoint(run, epoch, step):
        written.append(real_checkpoint(run, epoch, step))
        if len(written) == 3:  # seed 0 finished (2 epochs), seed 1 after its first epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Trainer, "save_resume_point", killed_after_third_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run_study(grid, output)
    (entry,) = grid.entries
    finished = output / "runs" / resolve_run(entry, 0, 2)[3] / RESULT_NAME
    killed = output / "runs" / resolve_run(entry, 1, 2)[3]
    assert finished.is_file() and not (killed / RESULT_NAME).exists()
    before = finished.stat().st_mtime_ns, finished.read_bytes()
    first_epoch = json.loads((killed / "log.json").read_text())
    assert [r["epoch"] for r in first_epoch] == [1]

    monkeypatch.setattr(trainer.Trainer, "save_resume_point", real_checkpoint)
    real_train, configs = shiftwise.training.train, []

    def recorded_train(config):
        configs.append(config)
        return real_train(config)

    monkeypatch.setattr(shiftwise.training, "train", recorded_train)
    progress = []
    results = run_study(grid, output, progress.append)
    wall = json.loads(before[1])["wall_seconds"]  # the ETA of seed 1: seed 0's measured time
    assert progress == [Progress(1, 2, 1, "tiny-seed1", wall), Progress(2, 2, 1, None, 0.0)]
    assert [(c.run.seed, c.run.resume) for c in configs] == [(1, str(killed))]
    assert (finished.stat().st_mtime_ns, finished.read_bytes()) == before
    log = json.loads((killed / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2] and log[0] == first_epoch[0]  # epoch 1 not redone
    assert [r["run_id"] for r in results] == ["tiny-seed0", "tiny-seed1"]


def test_dry_run_lists_runs_and_estimate_without_training(tmp_path: Path, capsys) -> None:
    assert main(["study", "quick", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("grid quick: 8 runs")
    for entry in load_grid("quick").entries:
        assert entry.name in out
    assert "estimated total" in out and "load average" in out


def test_a_run_two_entries_or_two_grids_define_alike_trains_once(
    tmp_path: Path, monkeypatch
) -> None:
    real_train, trained = shiftwise.training.train, []

    def recorded_train(config):
        trained.append((config.optim.epochs, config.run.seed))
        return real_train(config)

    monkeypatch.setattr(shiftwise.training, "train", recorded_train)
    store = tmp_path / "runs"
    first = GRID.replace("seeds = [0, 1]", "seeds = [0]").replace("epochs = 2", "epochs = 1")
    first += '[[runs]]\nname = "same"\nmodel = "convnext_atto"\n'  # = "tiny", another name
    (tmp_path / "a.toml").write_text(first)
    second = first.replace('name = "same"', 'name = "longer"\nepochs = 2')
    (tmp_path / "b.toml").write_text(second)
    a = run_study(load_grid(str(tmp_path / "a.toml")), tmp_path / "a", store=store)
    assert trained == [(1, 0)] and a[0]["top1"] == a[1]["top1"]
    b = run_study(load_grid(str(tmp_path / "b.toml")), tmp_path / "b", store=store)
    assert trained == [(1, 0), (2, 0)]  # "tiny" came from grid a's run
    assert b[0]["key"] == a[0]["key"] and b[1]["epochs"] == 2
    assert len(list(store.glob(f"*/{RESULT_NAME}"))) == 2
