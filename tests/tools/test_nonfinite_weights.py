"""Weights holding NaN or infinity are refused on load (issue 26): not evaluated to ``nan``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from shiftwise import io as swio
from shiftwise.cli import main
from shiftwise.errors import CheckpointError
from shiftwise.models import create_model, load_checkpoint

ATTO = {"num_classes": 10, "in_chans": 1, "width_factor": 0.25}


def _poisoned_weights(path: Path, value: float, legacy: bool = False) -> Path:
    """An atto's weights with one entry set to ``value``, correctly signed (a crafted file)."""
    model = create_model("slak_atto", **ATTO)
    swio.save_weights(model.state_dict(), path, model="slak_atto", model_kwargs=ATTO)
    tensors, metadata = swio.read_weights(path)
    tensors["head.fc.weight"][0, 0] = value
    if legacy:
        metadata = {"format": swio.LEGACY_WEIGHTS_FORMAT, "model": "slak_atto"}
        tensors = {f"model.{k}": v for k, v in tensors.items()}
    else:
        metadata["sha256"] = swio.weights_digest(tensors, metadata)
    path.write_bytes(save_safetensors(tensors, metadata=metadata))
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_eval_refuses_non_finite_weights_in_one_line(value: float, tmp_path: Path, capsys):
    path = _poisoned_weights(tmp_path / "model.safetensors", value)
    argv = ["eval", "--checkpoint", str(path), "--data", "digits", "--limit", "8"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "holds NaN or infinity in 1 tensors (e.g. head.fc.weight)" in captured.err
    assert captured.err.count("\n") == 1 and "loss" not in captured.out


@pytest.mark.parametrize("legacy", [False, True])
def test_every_load_path_refuses_them(legacy: bool, tmp_path: Path) -> None:
    path = _poisoned_weights(tmp_path / "model.safetensors", float("nan"), legacy)
    with pytest.raises(CheckpointError, match="holds NaN or infinity"):
        load_checkpoint(create_model("slak_atto", **ATTO), path)
    torch.testing.assert_close(  # finite files still load
        swio.read_weights(_poisoned_weights(tmp_path / "ok.safetensors", 0.5))[0]["head.fc.weight"][
            0, 0
        ],
        torch.tensor(0.5),
    )
