"""``shiftwise train --finetune``, ``--layer-decay``, ``--crop-pct``, ``--compile``,
``--channels-last`` and ``--grad-checkpointing`` end to end (atto models, 32 px digits)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shiftwise.cli import main
from shiftwise.io import load_training_state, read_weights
from shiftwise.models import create_model
from shiftwise.models.weights import save_checkpoint
from shiftwise.training import config_from_options
from shiftwise.training.trainer import Trainer

TINY = [
    "--width-factor", "0.25", "--data", "digits", "--train-limit", "128", "--val-limit", "64",
    "--batch-size", "32", "--no-progress",
]  # fmt: skip


def _source(tmp_path: Path, name: str, classes: int) -> tuple[Path, dict[str, torch.Tensor]]:
    """Weights of ``name`` (1-channel input, width 0.25) with ``classes`` outputs, as a user's
    earlier run or a converted checkpoint would give them."""
    torch.manual_seed(7)
    model = create_model(name, num_classes=classes, in_chans=1, width_factor=0.25)
    path = save_checkpoint(model, tmp_path / f"{name}-{classes}.safetensors")
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_finetune_resets_the_head_and_a_resume_never_reads_it_again(tmp_path: Path, caplog) -> None:
    source, source_tensors = _source(tmp_path, "convnext_atto", classes=7)
    run = tmp_path / "run"
    argv = ["train", "--model", "convnext_atto", *TINY, "--finetune", str(source)]
    argv += ["--layer-decay", "0.8", "--head-init-scale", "0.01", "--ema-decay", "0.5"]
    assert main([*argv, "--epochs", "1", "--output", str(run)]) == 0
    # the head reset line (the library's log names config fields)
    assert (
        f"model.finetune: {source} has a 7-class classifier, the model 10 classes: head.fc "
        "re-initialised (head init scale 0.01)" in caplog.text
    )
    state = load_training_state(run / "checkpoint.pt")
    assert state["config"]["model"]["finetune"] == str(source)
    assert state["config"]["optim"]["layer_decay"] == 0.8
    scales = sorted({group["lr_scale"] for group in state["optimizer"]["param_groups"]})
    assert scales[-1] == 1.0 and scales[0] == pytest.approx(0.8 ** (len(scales) - 1))
    _, metadata = read_weights(run / "model.safetensors")
    assert metadata["finetune"] == str(source)
    # every group ends at its own floor: min_lr times its scale, none raised to min_lr
    min_lr = state["config"]["optim"]["min_lr"]
    for group in state["optimizer"]["param_groups"]:
        assert group["lr"] == pytest.approx(min_lr * group["lr_scale"], rel=1e-12)

    # resume (the same command, more epochs) with the start file gone: the resume point wins
    resume_weights, _ = read_weights(run)
    ema_weights, _ = read_weights(run, "ema")
    assert not torch.equal(resume_weights["stem.0.weight"], source_tensors["stem.0.weight"])
    source.unlink()
    caplog.clear()
    options = {
        "model": "convnext_atto", "width_factor": 0.25, "data": "digits", "train_limit": 128,
        "val_limit": 64, "batch_size": 32, "progress": False, "finetune": str(source),
        "layer_decay": 0.8, "head_init_scale": 0.01, "ema_decay": 0.5, "epochs": 2,
        "resume": str(run), "allow_config_change": True,
    }  # fmt: skip
    trainer = Trainer(config_from_options(options))
    try:
        for key, value in trainer.model.state_dict().items():
            assert torch.equal(value, resume_weights[key]), key
        for key, value in trainer.ema.module.state_dict().items():
            assert torch.equal(value, ema_weights[key]), key
        trainer.fit(time.perf_counter())
    finally:
        trainer.close(failed=False)
    assert "model.finetune" in caplog.text and "is not read again" in caplog.text
    assert [r["epoch"] for r in json.loads((run / "log.json").read_text())] == [1, 2]

    # another layer decay on resume: every group gets its new scale and floor
    resume = ["train", "--resume", str(run), "--allow-config-change"]
    assert main([*resume, "--epochs", "3", "--layer-decay", "0.6"]) == 0
    groups = load_training_state(run / "checkpoint.pt")["optimizer"]["param_groups"]
    top = max(range(len(groups)), key=lambda i: groups[i]["lr_scale"])
    for group in groups:
        assert group["lr_scale"] in {0.6**k for k in range(len(groups))}
        assert group["lr"] == pytest.approx(min_lr * group["lr_scale"], rel=1e-12)
    assert groups[top]["lr_scale"] == 1.0 and min(g["lr_scale"] for g in groups) < 0.8**3

    # switching layer decay off on resume is refused, nothing changes
    before = _files(run)
    assert main([*resume, "--epochs", "4", "--layer-decay", "1"]) == 2
    assert _files(run) == before


def test_layer_decay_one_is_todays_run(tmp_path: Path) -> None:
    """``--layer-decay 1`` (the default) builds today's two groups and trains the same."""
    argv = ["train", "--model", "convnext_atto", *TINY, "--epochs", "1", "--train-limit", "64"]
    assert main([*argv, "--output", str(tmp_path / "a")]) == 0
    assert main([*argv, "--output", str(tmp_path / "b"), "--layer-decay", "1.0"]) == 0
    a, _ = read_weights(tmp_path / "a" / "model.safetensors")
    b, _ = read_weights(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)
    groups = load_training_state(tmp_path / "b" / "checkpoint.pt")["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]


def test_sparse_finetune_keeps_density_and_loads_the_head(tmp_path: Path, caplog) -> None:
    source, _ = _source(tmp_path, "slak_atto", classes=10)
    argv = ["train", "--model", "slak_atto", *TINY, "--epochs", "1", "--finetune", str(source)]
    argv += ["--sparse", "--density", "0.5", "--update-freq", "2", "--output", str(tmp_path / "r")]
    assert main(argv) == 0
    assert "re-initialised" not in caplog.text  # same class count: the head is loaded
    source.unlink()  # the resume continues from the resume point, with its masks
    resume = ["train", "--resume", str(tmp_path / "r"), "--epochs", "2", "--allow-config-change"]
    assert main(resume) == 0
    records = json.loads((tmp_path / "r" / "log.json").read_text())
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(r["density"] == pytest.approx(0.5, abs=0.01) for r in records)
    state = load_training_state(tmp_path / "r" / "checkpoint.pt")
    assert state["global_step"] == 8
    weights, _ = read_weights(tmp_path / "r" / "model.safetensors")
    for name, mask in state["masking"]["masks"].items():
        assert torch.all(weights[name][~mask] == 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--recipe", "finetune"], "--recipe: the finetune recipe starts from trained weights"),
        (["--head-init-scale", "0.1"], "--head-init-scale: only applies to fine-tuning"),
        (["--finetune-weights", "ema"], "--finetune-weights: only applies to fine-tuning"),
        (["--finetune", "MISSING"], "--finetune: "),
        (["--crop-pct", "0.9"], "--crop-pct: applies to ImageFolder data"),
        (["--layer-decay", "0"], "--layer-decay: expected a value in (0, 1], got 0.0"),
    ],
)
def test_bad_finetune_input_is_one_line(argv, message, tmp_path: Path, capsys) -> None:
    argv = [str(tmp_path / "missing.safetensors") if a == "MISSING" else a for a in argv]
    output = tmp_path / "o"
    assert main(["train", "--model", "convnext_atto", *TINY, "--output", str(output), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not output.exists()


def test_finetune_recipe_is_a_recipe(tmp_path: Path, caplog) -> None:
    source, _ = _source(tmp_path, "convnext_atto", classes=10)
    argv = ["train", "--model", "convnext_atto", *TINY, "--finetune", str(source)]
    argv += ["--recipe", "finetune", "--epochs", "1", "--output", str(tmp_path / "r")]
    assert main(argv) == 0
    config = load_training_state(tmp_path / "r" / "checkpoint.pt")["config"]
    assert config["optim"]["layer_decay"] == 0.8 and config["model"]["head_init_scale"] == 0.001
    assert config["optim"]["lr"] == 5e-5 and config["optim"]["warmup_epochs"] == 0
    assert "optim.min_lr" not in caplog.text  # 5e-5 * 32 / 512 is above min_lr 1e-6
    # a batch so much smaller than the recipe's that the scaled lr is below min_lr: said
    argv[argv.index(str(tmp_path / "r"))] = str(tmp_path / "small")
    assert main([*argv, "--lr-base-batch", "4096"]) == 0
    assert "optim.min_lr 1.00e-06 is above the learning rate 3.91e-07" in caplog.text


def test_channels_last_and_grad_checkpointing_train_the_same(tmp_path: Path) -> None:
    argv = ["train", "--model", "sw_atto", *TINY, "--epochs", "1", "--train-limit", "64"]
    assert main([*argv, "--output", str(tmp_path / "plain")]) == 0
    extra = ["--channels-last", "--grad-checkpointing"]
    assert main([*argv, *extra, "--output", str(tmp_path / "other")]) == 0
    plain, _ = read_weights(tmp_path / "plain" / "model.safetensors")
    other, _ = read_weights(tmp_path / "other" / "model.safetensors")
    assert plain.keys() == other.keys()
    for key in plain:
        torch.testing.assert_close(other[key], plain[key], rtol=1e-5, atol=1e-6)
    config = load_training_state(tmp_path / "other" / "checkpoint.pt")["config"]
    assert config["run"]["channels_last"] and config["run"]["grad_checkpointing"]


def _image_folder(root: Path) -> None:
    """2 classes, 16 train and 6 val images of 48x36 px (the eval crop matters)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("val", 6)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (36, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_validation_uses_the_eval_crop_of_shiftwise_eval(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "folder"
    _image_folder(folder)
    run = tmp_path / "run"
    argv = ["train", "--model", "convnext_atto", "--width-factor", "0.25", "--data", str(folder)]
    argv += ["--image-size", "32", "--batch-size", "8", "--epochs", "1", "--workers", "0"]
    argv += ["--crop-pct", "0.7", "--no-progress", "--output", str(run)]
    assert main(argv) == 0
    record = json.loads((run / "log.json").read_text())[-1]
    capsys.readouterr()
    evaluate = ["eval", "--checkpoint", str(run / "model.safetensors"), "--data", str(folder)]
    assert main([*evaluate, "--crop-pct", "0.7", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["crop_pct"] == 0.7 and result["count"] == 12
    assert result["top1"] == record["val_top1"]
    assert result["loss"] == pytest.approx(record["val_loss"], rel=1e-5)
    assert main([*evaluate, "--crop-pct", "1.0", "--json"]) == 0  # another crop, another loss
    assert json.loads(capsys.readouterr().out)["loss"] != pytest.approx(record["val_loss"])


def test_validation_crop_defaults_to_the_models_pretrained_cfg(tmp_path: Path) -> None:
    """A 224 px model's validation images get its 0.875 crop, an atto model's its 1.0."""
    folder = tmp_path / "folder"
    _image_folder(folder)
    for model, width, crop_pct in (("convnext_tiny", 0.05, 0.875), ("convnext_atto", 0.25, 1.0)):
        options = {"model": model, "width_factor": width, "data": str(folder), "image_size": 32}
        options.update(batch_size=8, workers=0, output=str(tmp_path / model))
        trainer = Trainer(config_from_options(options))
        trainer.close(failed=True)
        crop = trainer.val.dataset.dataset.crop
        assert (crop.size, crop.crop_pct) == (32, crop_pct)
    assert not any(tmp_path.glob("convnext_*"))


@pytest.mark.slow
def test_compiled_runs_save_and_resume_as_eager_ones(tmp_path: Path, capsys) -> None:
    """The real inductor backend (``--compile``): a compiled run's files are an eager run's
    (no ``_orig_mod.`` keys, EMA included), an eager run resumes it and a compiled run resumes
    the eager one; ``shiftwise eval --compile`` scores as eager ``eval`` does."""
    argv = ["train", "--model", "convnext_atto", *TINY, "--ema-decay", "0.5"]
    compiled, eager = tmp_path / "compiled", tmp_path / "eager"
    assert main([*argv, "--epochs", "1", "--compile", "--output", str(compiled)]) == 0
    assert main([*argv, "--epochs", "1", "--output", str(eager)]) == 0
    for name in ("model.safetensors", "model-ema.safetensors"):
        ours, _ = read_weights(compiled / name)
        theirs, _ = read_weights(eager / name)
        assert ours.keys() == theirs.keys()
        for key in ours:  # inductor's kernels round differently, four AdamW steps
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-3, atol=1e-4)
    resume = ["train", "--epochs", "2", "--allow-config-change"]
    assert main([*resume, "--resume", str(compiled), "--no-compile"]) == 0
    state = load_training_state(compiled / "checkpoint.pt")
    assert state["global_step"] == 8 and not state["config"]["run"]["compile"]
    assert main([*resume, "--resume", str(eager), "--compile"]) == 0
    assert load_training_state(eager / "checkpoint.pt")["config"]["run"]["compile"]
    capsys.readouterr()
    evaluate = ["eval", "--checkpoint", str(eager / "model.safetensors"), "--data", "digits"]
    results = []
    for extra in ([], ["--compile"]):
        assert main([*evaluate, "--limit", "64", "--json", *extra]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["top1"] == results[1]["top1"]
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-4)
