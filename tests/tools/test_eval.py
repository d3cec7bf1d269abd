"""``shiftwise eval``: top-1/top-5 of saved weights, unchanged by ``--reparam``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shiftwise.cli import main
from shiftwise.io import save_weights
from shiftwise.models import create_model


def _weights(tmp_path: Path, model_name: str) -> Path:
    """Random weights with non-trivial BN statistics, saved like ``shiftwise train`` does."""
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, width_factor=0.25, in_chans=1)
    model.train()
    with torch.no_grad():  # a few batches give the BNs real running statistics
        for _ in range(3):
            model(torch.randn(8, 1, 32, 32))
    path = tmp_path / f"{model_name}.safetensors"
    kwargs = {"num_classes": 10, "in_chans": 1, "width_factor": 0.25}
    save_weights(
        model.state_dict(),
        path,
        model=model_name,
        model_kwargs=kwargs,
        metadata={"image_size": 32},
    )
    return path


@pytest.mark.parametrize("model_name", ["sw_atto", "slak_atto"])
def test_reparam_gives_the_same_accuracy(model_name: str, tmp_path: Path, capsys) -> None:
    path = _weights(tmp_path, model_name)
    argv = ["eval", "--model", model_name, "--checkpoint", str(path), "--data", "digits"]
    argv += ["--limit", "96", "--json"]
    results = []
    for extra in ([], ["--reparam"]):
        assert main([*argv, *extra]) == 0
        results.append(json.loads(capsys.readouterr().out))
    plain, reparam = results
    assert reparam["reparam"] and plain["count"] == reparam["count"] == 96
    assert plain["top1"] == reparam["top1"] and plain["top5"] == reparam["top5"]
    assert plain["loss"] == pytest.approx(reparam["loss"], rel=1e-4)


def test_eval_errors_are_one_line(tmp_path: Path, capsys) -> None:
    path = _weights(tmp_path, "slak_atto")
    cases = [
        (["--model", "sw_atto", "--checkpoint", str(path)], "trained as 'slak_atto'"),
        (["--model", "slak_atto", "--checkpoint", str(tmp_path / "x.pt")], "no such file"),
        (["--model", "slak_atto", "--checkpoint", str(path), "--data", "bundled"], "4 classes"),
        (["--model", "slak_atto", "--checkpoint", str(path), "--weights", "ema"], "not 'ema'"),
    ]
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 40)
    cases.append(
        (["--model", "slak_atto", "--checkpoint", str(tmp_path / "bad.safetensors")], "readable")
    )
    for argv, message in cases:
        assert main(["eval", *argv, *_data(argv)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def _data(argv: list[str]) -> list[str]:
    return [] if "--data" in argv else ["--data", "digits"]


def test_a_flipped_bit_in_the_metadata_is_one_line(tmp_path: Path, capsys) -> None:
    """It used to reach json.loads as a raw JSONDecodeError: the digest now covers it."""
    path = _weights(tmp_path, "slak_atto")
    data = bytearray(path.read_bytes())
    at = data.index(b'"num_classes\\": 10') + 1  # inside the model_kwargs JSON string
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    assert main(["eval", "--checkpoint", str(path), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint: '{path}' is damaged" in err and err.count("\n") == 1
