"""A ``shiftwise train`` output loads through every documented path (one weights format).

The four paths: :func:`shiftwise.models.load_checkpoint`, ``create_model(...,
checkpoint_path=...)``, timm's ``create_model(..., pretrained=True,
pretrained_cfg_overlay=dict(file=...))``, and the CLI tools with no extra flags
(``shiftwise eval --checkpoint``). Each must give exactly the trained weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import shiftwise
from shiftwise.cli import main
from shiftwise.io import read_weights

timm = pytest.importorskip("timm")

ARCH = {"num_classes": 10, "in_chans": 1, "width_factor": 0.25}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of a quarter-width sw_atto on 128 digits, with EMA."""
    output = tmp_path_factory.mktemp("run") / "sw"
    argv = [
        "train", "--model", "sw_atto", "--width-factor", "0.25", "--data", "digits",
        "--train-limit", "128", "--val-limit", "64", "--batch-size", "32", "--epochs", "1",
        "--ema-decay", "0.5", "--no-progress", "--output", str(output),
    ]  # fmt: skip
    assert main(argv) == 0
    return output


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["model", "ema"])
def test_train_output_loads_through_every_path(run_dir: Path, weights: str, capsys) -> None:
    path = run_dir / ("model.safetensors" if weights == "model" else "model-ema.safetensors")
    expected, metadata = read_weights(path, weights)
    assert metadata["model"] == "sw_atto"
    assert {k: metadata[k] for k in ("num_classes", "in_chans")} == {
        "num_classes": "10",
        "in_chans": "1",
    }
    assert float(metadata["width_factor"]) == 0.25 and metadata["shiftwise_version"]

    loaded = [
        shiftwise.models.load_checkpoint(shiftwise.create_model("sw_atto", **ARCH), path),
        shiftwise.create_model("sw_atto", **ARCH, checkpoint_path=path),
        timm.create_model(
            "sw_atto", **ARCH, pretrained=True, pretrained_cfg_overlay={"file": str(path)}
        ),
    ]
    for model in loaded:
        state = model.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[key], value) for key, value in expected.items())

    # The CLI rebuilds the model from the file alone and scores what the loaded model scores.
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        outputs = [model.eval()(x) for model in loaded]
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], rtol=0, atol=0)
    argv = ["eval", "--checkpoint", str(path), "--data", "digits", "--limit", "64", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= report["top1"] <= 100.0


@pytest.mark.slow
def test_mismatched_file_names_keys_and_shapes(run_dir: Path) -> None:
    path = run_dir / "model.safetensors"
    with pytest.raises(
        ValueError, match=r"head\.fc\.weight: \(10, \d+\) in the file, \(7, \d+\) in the model"
    ):
        shiftwise.create_model("sw_atto", num_classes=7, in_chans=1, width_factor=0.25,
                               checkpoint_path=path)  # fmt: skip
