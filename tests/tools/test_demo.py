"""``shiftwise demo``: trains the listed models on the bundled set and compares them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiftwise.cli import main
from shiftwise.data import datasets
from shiftwise.data.bundled import BundledConfig


@pytest.mark.slow
def test_demo_trains_each_model_and_prints_the_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(datasets, "BundledConfig", lambda: BundledConfig(num_train=128, num_val=64))
    argv = ["demo", "--models", "convnext_atto", "slak_atto", "--epochs", "1"]
    argv += ["--width-factor", "0.25", "--data-dir", str(tmp_path / "cache")]
    argv += ["--output", str(tmp_path / "demo"), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "convnext_atto" in out and "slak_atto" in out and "chance 25.0%" in out
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert [s["model"] for s in summary] == ["convnext_atto", "slak_atto"]
    for entry in summary:
        assert 0 <= entry["top1"] <= 100 and Path(entry["curve"]).is_file()
        assert Path(entry["checkpoint"]).is_file()
