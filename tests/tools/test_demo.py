"""``shiftwise demo``: trains the listed models on the bundled set and compares them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from shiftwise.cli import main
from shiftwise.data import datasets
from shiftwise.data.bundled import BundledConfig

NUM_VAL = 64


@pytest.mark.slow
def test_demo_reports_what_each_trained_model_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(
        datasets, "BundledConfig", lambda: BundledConfig(num_train=128, num_val=NUM_VAL)
    )
    models = ["convnext_atto", "slak_atto"]
    cache = str(tmp_path / "cache")
    argv = ["demo", "--models", *models, "--epochs", "1", "--width-factor", "0.25"]
    argv += ["--data-dir", cache, "--output", str(tmp_path / "demo"), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert [s["model"] for s in summary] == models
    assert "(chance 25.0%)" in out  # 4 directions
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if "%" in line}
    for entry in summary:
        # The table shows the JSON's figure, which is the last epoch's logged validation top-1.
        assert rows[entry["model"]] == f"{entry['top1']:.2f}%"
        assert entry["chance"] == 25.0
        log = json.loads((Path(entry["curve"]).parent / "log.json").read_text())
        assert [r["epoch"] for r in log] == [1] and log[-1]["val_top1"] == entry["top1"]
        correct = entry["top1"] * NUM_VAL / 100  # a whole number of the validation images
        assert correct == pytest.approx(round(correct), abs=1e-9) and 0 <= correct <= NUM_VAL
        with Image.open(entry["curve"]) as curve:
            curve.load()
        # The saved checkpoint, evaluated on its own, scores what the demo reports.
        evaluate = ["eval", "--model", entry["model"], "--checkpoint", entry["resume_point"]]
        assert main([*evaluate, "--data-dir", cache, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["count"] == NUM_VAL and result["top1"] == pytest.approx(entry["top1"])
