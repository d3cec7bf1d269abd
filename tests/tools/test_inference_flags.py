"""``--channels-last`` / ``--no-channels-last`` of ``shiftwise eval`` and ``predict``: a layout,
never a result (``--compile`` of eval: the slow test in ``test_train_finetune.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shiftwise.cli import main
from shiftwise.io import save_weights
from shiftwise.models import create_model


def _weights(tmp_path: Path, in_chans: int, classes: int) -> Path:
    """Random sw_atto weights with real BN statistics, saved like ``shiftwise train``."""
    torch.manual_seed(0)
    kwargs = {"num_classes": classes, "in_chans": in_chans, "width_factor": 0.25}
    model = create_model("sw_atto", **kwargs)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, in_chans, 32, 32))
    path = tmp_path / f"sw_atto-{in_chans}.safetensors"
    metadata = {"image_size": 32}
    save_weights(model.state_dict(), path, model="sw_atto", model_kwargs=kwargs, metadata=metadata)
    return path


def test_eval_layout_changes_no_score(tmp_path: Path, capsys) -> None:
    argv = ["eval", "--checkpoint", str(_weights(tmp_path, 1, 10)), "--data", "digits"]
    results = []
    for layout in ("--channels-last", "--no-channels-last"):
        assert main([*argv, "--limit", "64", "--json", layout]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["top1"] == results[1]["top1"]
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)


def test_predict_layout_changes_no_prediction(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i, size in enumerate([(40, 30), (50, 70), (33, 33)]):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    argv = ["predict", str(folder), "--checkpoint", str(_weights(tmp_path, 3, 4))]
    rows = []
    for layout in ("--channels-last", "--no-channels-last"):
        out = tmp_path / f"{layout}.csv"
        assert main([*argv, "-o", str(out), "--top-k", "4", "--no-progress", layout]) == 0
        rows.append([line.split(",") for line in out.read_text().splitlines()])
    assert [row[:1] + row[1::2] for row in rows[0]] == [row[:1] + row[1::2] for row in rows[1]]
    for a, b in zip(rows[0][1:], rows[1][1:], strict=True):
        assert [float(x) for x in a[2::2]] == pytest.approx([float(x) for x in b[2::2]], abs=2e-6)
