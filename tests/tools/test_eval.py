"""``shiftwise eval``: top-1/top-5 of saved weights, unchanged by ``--reparam``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

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
        (["--checkpoint", str(path), "--workers", "-1"], "--workers: expected an integer >= 0"),
        (["--checkpoint", str(path), "--image-size", "100000"], "--image-size: slak_atto takes"),
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


def _folder_weights(tmp_path: Path) -> Path:
    """RGB sw_atto weights for 2 classes (recorded image size 32) and an ImageFolder of
    photos wider than tall under ``tmp_path / "data"``."""
    torch.manual_seed(0)
    kwargs = {"num_classes": 2, "in_chans": 3, "width_factor": 0.25}
    model = create_model("sw_atto", **kwargs)
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
    path = tmp_path / "rgb.safetensors"
    save_weights(
        model.state_dict(), path, model="sw_atto", model_kwargs=kwargs, metadata={"image_size": 32}
    )
    generator = torch.Generator().manual_seed(1)
    for split in ("train", "val"):
        for name in ("a", "b"):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                pixels = torch.randint(0, 256, (30, 45, 3), generator=generator, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return path


def test_eval_crops_folder_images_with_the_models_crop_pct(tmp_path: Path, capsys) -> None:
    """ImageFolder validation images get the evaluation crop of the model (sw_atto:
    crop_pct 1.0 at the recorded 32 px) or of --crop-pct, which changes the scores."""
    path = _folder_weights(tmp_path)
    argv = ["eval", "--checkpoint", str(path), "--data", str(tmp_path / "data"), "--json"]
    results = []
    for extra in ([], ["--crop-pct", "0.5"]):
        assert main([*argv, *extra]) == 0
        results.append(json.loads(capsys.readouterr().out))
    default, cropped = results
    assert default["crop_pct"] == 1.0 and cropped["crop_pct"] == 0.5
    assert default["image_size"] == cropped["image_size"] == 32
    assert default["count"] == cropped["count"] == 6
    assert default["loss"] != cropped["loss"]


def test_crop_pct_errors_are_one_line(tmp_path: Path, capsys) -> None:
    path = _folder_weights(tmp_path)
    folder = str(tmp_path / "data")
    for data, value, message in (
        (folder, "0", "--crop-pct: expected a number in (0, 1]"),
        (folder, "1.2", "--crop-pct: expected a number in (0, 1]"),
        ("digits", "0.875", "--crop-pct: applies to ImageFolder data"),
    ):
        argv = ["eval", "--checkpoint", str(path), "--data", data, "--crop-pct", value]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
