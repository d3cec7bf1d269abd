"""``shiftwise train`` in process: a tiny real-data run, its files, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shiftwise.cli import main
from shiftwise.io import load_training_state, read_weights
from shiftwise.training.config import default_recipe

TINY = [
    "--width-factor", "0.25", "--data", "digits", "--train-limit", "128", "--val-limit", "64",
    "--batch-size", "32", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of a tiny convnext_atto on 128 digits (4 steps)."""
    output = tmp_path_factory.mktemp("run") / "digits"
    args = ["train", "--model", "convnext_atto", *TINY, "--epochs", "1", "--output", str(output)]
    assert main([*args, "--ema-decay", "0.5"]) == 0
    return output


def test_run_writes_logs_curve_checkpoint_and_weights(trained: Path, capsys) -> None:
    records = json.loads((trained / "log.json").read_text())
    assert len(records) == 1
    assert {"train_loss", "val_top1", "val_top5", "lr", "ema_top1", "time"} <= records[0].keys()
    assert (trained / "log.csv").read_text().startswith("epoch,")
    assert (trained / "curve.png").read_bytes()[:4] == b"\x89PNG"
    state = load_training_state(trained / "checkpoint.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 0, 4)
    assert {"optimizer", "scheduler", "ranks", "config"} <= state.keys()
    config = state["config"]
    assert config["optim"]["batch_size"] == 32 and config["model"]["name"] == "convnext_atto"
    assert sorted(p.name for p in trained.glob("weights-*.safetensors")) == [
        "weights-e0001-s00000004-ema.safetensors",
        "weights-e0001-s00000004.safetensors",
    ]
    model, meta = read_weights(trained / "model.safetensors")
    ema, ema_meta = read_weights(trained / "model.safetensors", "ema")
    assert model.keys() == ema.keys() and not any(k.startswith("model.") for k in model)
    assert meta["model"] == "convnext_atto" and meta["num_classes"] == "10"
    assert ema_meta["weights"] == "ema" and (trained / "model-ema.safetensors").is_file()


def test_fresh_run_refuses_to_overwrite_a_checkpoint(trained: Path, capsys) -> None:
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    argv = ["train", "--model", "convnext_atto", *TINY, "--epochs", "1", "--output", str(trained)]
    assert main(argv) == 2
    assert "already holds a resume point" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "resnet50"], "unknown model 'resnet50'"),
        (["--data", "/no/such/dir"], "no such directory"),
        (["--data", "EMPTY"], "must hold train/<class>"),
        (["--batch-size", "4096"], "cannot fill one step"),
        (["--accum-steps", "0"], "--accum-steps: expected an integer >= 1, got 0"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, tmp_path: Path, capsys) -> None:
    argv = [str(tmp_path) if a == "EMPTY" else a for a in argv]
    code = main(
        ["train", "--model", "convnext_atto", *TINY, "--output", str(tmp_path / "o"), *argv]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_resume_errors_leave_the_checkpoint_untouched(trained: Path, capsys) -> None:
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    resume = ["--resume", str(trained / "checkpoint.pt"), "--epochs", "2"]
    # another data set, another model, more epochs: refused without --allow-config-change
    assert main(["train", "--model", "convnext_atto", *TINY[:2], "--data", "bundled", *resume]) == 2
    assert "--data: digits -> bundled" in capsys.readouterr().err
    assert main(["train", "--model", "slak_atto", *TINY, *resume]) == 2
    err = capsys.readouterr().err
    assert "--model: a resume cannot change it (convnext_atto -> slak_atto)" in err
    # allowed, the class count still has to match (bundled: 4 classes)
    argv = ["train", *TINY[:2], "--data", "bundled", *resume, "--allow-config-change"]
    assert main(argv) == 2
    assert "has 10 classes" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before

    corrupt = trained.parent / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    args = ["train", "--model", "convnext_atto", *TINY, "--resume", str(corrupt / "checkpoint.pt")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--resume: " in err and "is not a readable checkpoint" in err
    assert err.count("\n") == 1
    assert (corrupt / "checkpoint.pt").read_bytes() == b"not a checkpoint"
    assert sorted(p.name for p in corrupt.iterdir()) == ["checkpoint.pt"]


def test_resume_continues_training(trained: Path, tmp_path: Path, caplog) -> None:
    resumed = tmp_path / "more"
    argv = ["train", "--epochs", "2", "--resume", str(trained), "--output", str(resumed)]
    assert main([*argv, "--allow-config-change"]) == 0  # every other option from the checkpoint
    assert "optim.epochs: 1 -> 2" in caplog.text  # the library's log names config fields
    records = json.loads((resumed / "log.json").read_text())
    assert [r["epoch"] for r in records] == [2]
    state = load_training_state(resumed / "checkpoint.pt")
    assert state["global_step"] == 8 and state["config"]["optim"]["ema_decay"] == 0.5


def test_recipes_follow_the_model() -> None:
    slak = default_recipe("slak_tiny").optim
    assert slak.lr == 4e-3 and slak.epochs == 300
    assert default_recipe("sw_tiny").model.drop_path == 0.2
    assert default_recipe("convnext_tiny").model.drop_path == 0.1
    atto = default_recipe("sw_atto")
    assert atto.optim.epochs < 20 and atto.augment.mixup == 0
    with pytest.raises(ValueError, match=r"run\.recipe"):
        default_recipe("sw_atto", "imagenet")


def test_sparse_training_keeps_density(tmp_path: Path) -> None:
    argv = ["train", "--model", "slak_atto", *TINY, "--epochs", "1", "--sparse"]
    assert main([*argv, "--density", "0.5", "--update-freq", "2", "--output", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "log.json").read_text())[-1]
    assert record["density"] == pytest.approx(0.5, abs=0.01)
    masks = load_training_state(tmp_path / "checkpoint.pt")["masking"]["masks"]
    weights, _ = read_weights(tmp_path / "model.safetensors")
    for name, mask in masks.items():
        assert torch.all(weights[name][~mask] == 0)
