"""``shiftwise predict``: the CSV of top-k classes, through the evaluation pipeline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shiftwise.cli import main
from shiftwise.data.transforms import EvalCrop, decode
from shiftwise.io import save_weights
from shiftwise.models import create_model

CLASSES = ["cat", "dog", "bird"]


def _weights(tmp_path: Path, classes=CLASSES, in_chans: int = 3) -> tuple[Path, torch.nn.Module]:
    """Random sw_atto weights with real BN statistics, saved like ``shiftwise train``."""
    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "in_chans": in_chans, "width_factor": 0.25}
    model = create_model("sw_atto", **kwargs)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, in_chans, 32, 32))
    model.eval()
    metadata = {"image_size": 32}
    if classes is not None:
        metadata["classes"] = json.dumps(classes)
    path = tmp_path / "model.safetensors"
    save_weights(model.state_dict(), path, model="sw_atto", model_kwargs=kwargs, metadata=metadata)
    return path, model


def _images(folder: Path) -> list[Path]:
    """Three readable pictures (PNG, JPEG, grayscale, sizes differ) and one broken JPEG."""
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    paths = []
    for name, size, mode in [
        ("a.png", (40, 30), "RGB"),
        ("b.jpg", (50, 70), "RGB"),
        ("sub/c.png", (33, 33), "L"),
    ]:
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / name)
        paths.append(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "notes.txt").write_text("not an image, not listed")
    return paths


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_writes_top_k_with_class_names(tmp_path: Path, capsys) -> None:
    weights, model = _weights(tmp_path)
    images = _images(tmp_path / "pictures")
    out = tmp_path / "predictions.csv"
    argv = ["predict", str(tmp_path / "pictures"), "--checkpoint", str(weights)]
    assert main([*argv, "-o", str(out), "--top-k", "2", "--batch-size", "2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "wrote 3 predictions" in err
    rows = _rows(out)
    assert [row["file"] for row in rows] == [str(p) for p in sorted(images)]
    assert list(rows[0]) == [
        "file",
        "index_1",
        "class_1",
        "probability_1",
        "index_2",
        "class_2",
        "probability_2",
    ]
    # The probabilities are the model's softmax on the evaluation crop (sw_atto: crop_pct 1).
    crop = EvalCrop(32, 1.0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for row in rows:
        image = decode(Path(row["file"]).read_bytes(), "RGB", crop)[None].float() / 255
        with torch.no_grad():
            expected = model((image - mean) / std).softmax(1)[0]
        top = expected.topk(2)
        assert [int(row["index_1"]), int(row["index_2"])] == top.indices.tolist()
        assert row["class_1"] == CLASSES[int(row["index_1"])]
        got = [float(row["probability_1"]), float(row["probability_2"])]
        assert got == pytest.approx(top.values.tolist(), abs=2e-6)


def test_one_image_without_class_names_to_stdout(tmp_path: Path, capsys) -> None:
    weights, _ = _weights(tmp_path, classes=None)
    image = _images(tmp_path / "pictures")[0]
    assert main(["predict", str(image), "--checkpoint", str(weights), "-o", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",") == ["file"] + [
        f"{kind}_{rank}" for rank in (1, 2, 3) for kind in ("index", "probability")
    ]
    assert len(lines) == 2 and lines[1].startswith(str(image))
    probabilities = [float(v) for v in lines[1].split(",")[2::2]]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert probabilities == sorted(probabilities, reverse=True)


def test_predict_refuses_to_overwrite_inputs_and_odd_outputs(tmp_path: Path, capsys) -> None:
    weights, _ = _weights(tmp_path)
    images = _images(tmp_path / "pictures")
    base = ["predict", str(tmp_path / "pictures"), "--checkpoint", str(weights), "--no-progress"]
    before = images[0].read_bytes()
    cases = [
        (["-o", str(images[0])], "is one of the input images"),
        (["-o", str(tmp_path)], "is a directory"),
        (["-o", str(tmp_path / "p.csv"), "--top-k", "0"], "--top-k"),
        (["-o", str(tmp_path / "p.csv"), "--crop-pct", "1.5"], "--crop-pct"),
        (["-o", str(tmp_path / "p.csv"), "--class-map", str(images[0])], "--class-map"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert images[0].read_bytes() == before
    existing = tmp_path / "old.csv"
    existing.write_text("replaced: the user named it\n")
    assert main([*base, "-o", str(existing)]) == 0
    assert _rows(existing)[0]["class_1"] in CLASSES


def test_no_readable_image_and_missing_inputs_are_one_line(tmp_path: Path, capsys) -> None:
    weights, _ = _weights(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG nothing")
    out = tmp_path / "p.csv"
    for inputs, message in (
        ([str(broken)], "none of the 1 images could be read"),
        ([str(tmp_path / "absent.jpg")], "no such file or directory"),
    ):
        assert main(["predict", *inputs, "--checkpoint", str(weights), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().splitlines()[-1].startswith("shiftwise predict:")
    assert not out.exists()


def test_class_map_names_the_outputs_and_grayscale_models_are_refused(
    tmp_path: Path, capsys
) -> None:
    weights, _ = _weights(tmp_path, classes=None)
    image = _images(tmp_path / "pictures")[1]
    names = tmp_path / "names.txt"
    names.write_text("alpha\nbeta\ngamma\n")
    out = tmp_path / "p.csv"
    argv = ["predict", str(image), "--checkpoint", str(weights), "-o", str(out)]
    assert main([*argv, "--class-map", str(names), "--top-k", "1"]) == 0
    assert _rows(out)[0]["class_1"] in ("alpha", "beta", "gamma")
    gray = tmp_path / "gray"
    gray.mkdir()
    weights, _ = _weights(gray, in_chans=1)
    assert main(["predict", str(image), "--checkpoint", str(weights), "-o", str(out)]) == 2
    assert "1-channel input" in capsys.readouterr().err


def test_a_trained_run_directory_names_its_classes(tmp_path: Path, capsys) -> None:
    """shiftwise train on an ImageFolder (random crops in the workers) records the class
    names; predict reads the run directory and prints them."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("apple", "pear"):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    run = tmp_path / "run"
    argv = ["train", "--model", "sw_atto", "--width-factor", "0.25", "--image-size", "32"]
    argv += ["--data", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "4"]
    argv += ["--crop-scale", "0.5", "--hflip", "0.5", "--workers", "0", "--no-progress"]
    assert main([*argv, "--output", str(run)]) == 0
    out = tmp_path / "p.csv"
    pictures = str(tmp_path / "data" / "val")
    assert main(["predict", pictures, "--checkpoint", str(run), "-o", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 8 and {row["class_1"] for row in rows} <= {"apple", "pear"}
    assert all(row["class_1"] != row["class_2"] for row in rows)
