"""``shiftwise train --recipe paper`` (bfloat16 autocast on) trains the papers' models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from shiftwise.cli import main
from shiftwise.io import load_training_state
from shiftwise.training.recipe import default_recipe


@pytest.mark.parametrize("model", ["sw_atto", "slak_atto"])
def test_paper_recipe_trains_with_autocast(model: str, tmp_path: Path) -> None:
    """Two steps of the paper recipe at 32 px: autocast on, finite losses, weights written."""
    assert default_recipe("sw_tiny")["optim"]["amp"] is True
    argv = [
        "train", "--model", model, "--recipe", "paper", "--data", "digits",
        "--image-size", "32", "--train-limit", "32", "--val-limit", "16", "--batch-size", "16",
        "--epochs", "1", "--no-progress", "--output", str(tmp_path / "run"),
    ]  # fmt: skip
    assert main(argv) == 0
    (record,) = json.loads((tmp_path / "run" / "log.json").read_text())
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["val_loss"])
    assert load_training_state(tmp_path / "run" / "checkpoint.pt")["config"]["optim"]["amp"]
