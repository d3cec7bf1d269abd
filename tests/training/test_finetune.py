"""Fine-tuning pieces: start weights (head reset, mismatches, sources), layer decay, recipe."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from testing_utils import official_state_dict
from torch import nn

from shiftwise.errors import CheckpointError, UsageError
from shiftwise.io import save_weights
from shiftwise.models import create_model, reparameterize
from shiftwise.models.weights import save_checkpoint
from shiftwise.tools.convert import convert_checkpoint, map_key
from shiftwise.training.config import FINETUNE, RECIPES, OptimConfig, validate
from shiftwise.training.finetune import (
    layer_decay_param_groups,
    layer_ids,
    load_start_weights,
)
from shiftwise.training.optimization import build_optimizer, build_scheduler, param_groups
from shiftwise.training.run_directory import claim_run_directory

ATTO = ("sw_atto", "slak_atto", "convnext_atto")
HEAD = ("head.fc.weight", "head.fc.bias")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **kwargs)


def randomized(model: nn.Module, seed: int = 1) -> nn.Module:
    """Every floating tensor (parameters and buffers) drawn at random: nothing equals a fresh
    model's by chance (layer scales, norms and BN statistics are constants when built)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return model


def source_file(tmp_path: Path, name: str, classes: int) -> tuple[Path, dict[str, torch.Tensor]]:
    model = randomized(build(name, num_classes=classes))
    path = save_checkpoint(model, tmp_path / f"{name}-{classes}.safetensors")
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def assert_loaded(model: nn.Module, source: dict[str, torch.Tensor], skip=()) -> None:
    state = model.state_dict()
    assert set(state) == set(source)
    for key, value in state.items():
        if key not in skip:
            assert torch.equal(value, source[key]), key


# --- start weights --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ATTO)
def test_head_reset_on_another_class_count(tmp_path, caplog, name: str) -> None:
    path, source = source_file(tmp_path, name, classes=7)
    model = build(name, num_classes=3)
    with caplog.at_level(logging.INFO, logger="shiftwise.training.finetune"):
        start = load_start_weights(model, path)
    assert start.head_reset and start.file_classes == 7 and start.model == name
    lines = [r.getMessage() for r in caplog.records if r.name == "shiftwise.training.finetune"]
    assert len(lines) == 1
    assert "7-class" in lines[0] and "3 classes" in lines[0] and "head.fc" in lines[0]
    state = model.state_dict()
    assert state["head.fc.weight"].shape == (3, model.num_features)
    assert torch.equal(state["head.fc.bias"], torch.zeros(3))
    assert 0 < state["head.fc.weight"].std() < 0.05  # a fresh trunc_normal(0.02), not a copy
    assert_loaded(model, {**source, **{k: state[k] for k in HEAD}}, skip=HEAD)


def test_same_class_count_loads_the_head_as_is(tmp_path, caplog) -> None:
    path, source = source_file(tmp_path, "convnext_atto", classes=5)
    model = build("convnext_atto", num_classes=5)
    with caplog.at_level(logging.INFO, logger="shiftwise.training.finetune"):
        start = load_start_weights(model, path, head_init_scale=0.001)
    assert not start.head_reset and not caplog.records
    assert_loaded(model, source)  # the scale applies to a re-initialised head only


def test_head_init_scale_multiplies_the_fresh_head(tmp_path) -> None:
    path, _ = source_file(tmp_path, "slak_atto", classes=10)
    heads = []
    for scale in (1.0, 0.001):
        model = build("slak_atto", num_classes=4)
        torch.manual_seed(5)
        load_start_weights(model, path, head_init_scale=scale)
        heads.append(model.head.fc.weight.detach().clone())
    torch.testing.assert_close(heads[1], heads[0] * 0.001, rtol=1e-6, atol=0)
    model = build("slak_atto", num_classes=0)  # no classifier: all but the file's head
    assert load_start_weights(model, path).head_reset
    assert not any(key.startswith("head.fc") for key in model.state_dict())


def test_mismatches_are_one_error_naming_them(tmp_path) -> None:
    model = randomized(build("convnext_atto", num_classes=3))
    state = dict(model.state_dict())
    del state["stages.1.blocks.0.fc1.weight"]
    state["stages.9.extra.weight"] = torch.ones(2)
    state["stages.2.blocks.3.conv_dw.weight"] = torch.ones(128, 1, 5, 5)
    path = tmp_path / "bad.safetensors"
    save_weights(state, path, model="convnext_atto", model_kwargs={"num_classes": 3})
    with pytest.raises(CheckpointError) as error:
        load_start_weights(build("convnext_atto", num_classes=3), path)
    message = str(error.value)
    assert "\n" not in message and message.startswith("--finetune ")
    assert "1 missing keys: stages.1.blocks.0.fc1.weight" in message
    assert "1 unexpected keys: stages.9.extra.weight" in message
    assert "stages.2.blocks.3.conv_dw.weight: (128, 1, 5, 5) in the file" in message


def test_other_architecture_and_deployed_weights_are_refused(tmp_path) -> None:
    path, _ = source_file(tmp_path, "slak_atto", classes=3)
    with pytest.raises(CheckpointError, match=r"for model 'slak_atto', not 'convnext_atto'"):
        load_start_weights(build("convnext_atto", num_classes=3), path)
    deployed = save_checkpoint(
        reparameterize(build("slak_atto", num_classes=3).eval()), tmp_path / "deployed.safetensors"
    )
    with pytest.raises(CheckpointError, match=r"re-parameterised \(deployed\) weights"):
        load_start_weights(build("slak_atto", num_classes=3), deployed)
    official = tmp_path / "official.pth"
    official.write_bytes(b"not read")
    with pytest.raises(CheckpointError, match=r"shiftwise convert --from"):
        load_start_weights(build("slak_atto", num_classes=3), official)


def test_run_directory_gives_its_newest_resume_point(tmp_path) -> None:
    """A run directory as ``shiftwise train`` leaves it (its own resume point writer): the
    newest verified checkpoint's weights, the EMA on request; a sparse run's zeros stay."""
    run = tmp_path / "run"
    writer = claim_run_directory(run)
    sources = {}
    for epoch, seed in ((1, 1), (2, 2)):
        model = randomized(build("sw_atto", num_classes=6), seed=seed)
        ema = randomized(build("sw_atto", num_classes=6), seed=seed + 10)
        with torch.no_grad():  # a sparse run's weights file: pruned entries stored as zeros
            model.stages[0].blocks[0].fc1.weight[:, ::2] = 0
        tensors = {"model": model.state_dict(), "ema": ema.state_dict()}
        writer.save_resume_point(
            tensors,
            {"epoch": epoch, "global_step": 10 * epoch},
            model="sw_atto",
            model_kwargs={"num_classes": 6},
            metadata={"image_size": 64, "data": "bundled"},
        )
        sources = {kind: {k: v.clone() for k, v in sd.items()} for kind, sd in tensors.items()}
    writer.release()
    for weights in ("model", "ema"):
        model = build("sw_atto", num_classes=6)
        start = load_start_weights(model, run, weights=weights)
        assert not start.head_reset and start.metadata["image_size"] == "64"
        assert_loaded(model, sources[weights])
    model = build("sw_atto", num_classes=2)
    assert load_start_weights(model, run / "checkpoint.pt").head_reset
    assert_loaded(model, sources["model"], skip=HEAD)
    assert (model.stages[0].blocks[0].fc1.weight[:, ::2] == 0).all()


@pytest.mark.slow
def test_converted_official_checkpoint_to_another_class_count(tmp_path) -> None:
    """SW-T's official ImageNet checkpoint (its key table), converted, fine-tuned to 10
    classes: every official tensor arrives under its converted name, the head is fresh."""
    official = official_state_dict("official_sw_tiny_state_dict.tsv")
    checkpoint = tmp_path / "sw_tiny.pth"
    args = argparse.Namespace(model="SW_tiny")
    torch.save({"model": {f"module.{k}": v for k, v in official.items()}, "args": args}, checkpoint)
    converted = tmp_path / "sw_tiny.safetensors"
    assert convert_checkpoint("sw", checkpoint, converted) == "sw_tiny"
    model = create_model("sw_tiny", num_classes=10)
    start = load_start_weights(model, converted, head_init_scale=0.001)
    assert start.head_reset and start.file_classes == 1000
    assert start.metadata["converted_from"] == "sw"
    state = model.state_dict()
    for key, value in official.items():
        ours = map_key(key, "sw")
        if ours in HEAD:
            assert state[ours].shape[0] == 10
        else:
            assert torch.equal(state[ours], value), key
    assert state["head.fc.weight"].std() == pytest.approx(0.02 * 0.001, rel=0.1)


# --- layer-wise lr decay --------------------------------------------------------------------


@pytest.mark.parametrize("name", ATTO)
def test_layer_ids_are_stem_blocks_head(name: str) -> None:
    model = build(name)
    ids = layer_ids(model)
    blocks = sum(model.depths)
    assert max(ids.values()) == blocks + 1
    assert {ids[k] for k in ids if k.startswith("stem.")} == {0}
    assert {ids[k] for k in ids if k.startswith("head.")} == {blocks + 1}
    first = 1
    for i, depth in enumerate(model.depths):
        for j in range(depth):
            block = {ids[k] for k in ids if k.startswith(f"stages.{i}.blocks.{j}.")}
            assert block == {first + j}, (i, j)
        down = {ids[k] for k in ids if k.startswith(f"stages.{i}.downsample.")}
        assert down <= {first}  # joins the stage's first block (none in stage 0)
        first += depth


@pytest.mark.parametrize("name", ATTO)
def test_layer_decay_groups_match_timm(name: str) -> None:
    timm_optim = pytest.importorskip("timm.optim")
    timm_models = pytest.importorskip("timm.models")
    model = build(name)
    assert layer_ids(model) == timm_models.group_parameters(
        model, model.group_matcher(coarse=False), reverse=True
    )
    ours = layer_decay_param_groups(model, weight_decay=0.05, layer_decay=0.8, lr=1e-3)
    theirs = timm_optim.param_groups_layer_decay(
        model, weight_decay=0.05, no_weight_decay_list=model.no_weight_decay(), layer_decay=0.8
    )

    def per_parameter(groups) -> dict[int, tuple[float, float]]:
        return {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}

    mine, timms = per_parameter(ours), per_parameter(theirs)
    assert mine.keys() == timms.keys() == {id(p) for p in model.parameters()}
    for key, (scale, decay) in mine.items():
        assert scale == pytest.approx(timms[key][0], rel=1e-12) and decay == timms[key][1]
    for group in ours:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"], rel=1e-12)
    assert min(s for s, _ in mine.values()) == pytest.approx(0.8 ** (sum(model.depths) + 1))


def test_layer_decay_one_decays_what_param_groups_decays() -> None:
    model = build("sw_atto")
    plain = param_groups(model, 0.05)
    groups = layer_decay_param_groups(model, weight_decay=0.05, layer_decay=1.0, lr=2e-3)
    assert {g["lr"] for g in groups} == {2e-3}
    for wd in (0.05, 0.0):
        expected = {id(p) for g in plain if g["weight_decay"] == wd for p in g["params"]}
        assert {id(p) for g in groups if g["weight_decay"] == wd for p in g["params"]} == expected


def test_layer_decay_with_fused_adamw_steps_each_group_at_its_rate() -> None:
    """One fused AdamW step: each weight moves by its group's lr (Adam's first step is
    ``lr * g / (|g| + eps)``) plus its decoupled weight decay; the same as unfused."""
    model = build("slak_atto", num_classes=4)
    generator = torch.Generator().manual_seed(3)
    results = []
    for fused in (True, False):
        copy = build("slak_atto", num_classes=4)
        copy.load_state_dict(model.state_dict())
        for p in copy.parameters():
            p.grad = torch.randn(p.shape, generator=generator.manual_seed(7))
        groups = layer_decay_param_groups(copy, weight_decay=0.05, layer_decay=0.5, lr=1e-2)
        optimizer = torch.optim.AdamW(groups, lr=123.0, fused=fused)  # every group sets lr
        before = {id(p): p.detach().clone() for p in copy.parameters()}
        optimizer.step()
        for group in groups:
            for p in group["params"]:
                lr, wd, old = group["lr"], group["weight_decay"], before[id(p)]
                step = p.grad / (p.grad.abs() + 1e-8)
                torch.testing.assert_close(p.detach(), old * (1 - lr * wd) - lr * step)
        results.append([p.detach().clone() for p in copy.parameters()])
    for fused, unfused in zip(*results, strict=True):
        torch.testing.assert_close(fused, unfused, rtol=1e-6, atol=4e-9)  # 2 ulp at 0.02


def test_bad_layer_decay_and_scale_are_named() -> None:
    model = build("convnext_atto")
    for value in (0.0, 1.5, float("nan")):
        with pytest.raises(UsageError, match=r"^layer_decay: expected a value in \(0, 1\]"):
            layer_decay_param_groups(model, 0.05, value, 1e-3)
    with pytest.raises(UsageError, match=r"^layer_decay: Linear has no group_matcher"):
        layer_ids(nn.Linear(2, 2))
    with pytest.raises(UsageError, match=r"^head_init_scale: expected a finite number"):
        load_start_weights(model, "unused.safetensors", head_init_scale=float("inf"))


# --- recipe ---------------------------------------------------------------------------------


def test_finetune_recipe_is_the_official_fine_tuning() -> None:
    """``--recipe finetune``: the ConvNeXt fine-tuning settings, a valid partial config."""
    assert RECIPES["finetune"] is FINETUNE
    assert validate(FINETUNE, devices=False) == FINETUNE
    optim = FINETUNE.optim
    assert (optim.lr, optim.lr_base_batch, optim.epochs) == (5e-5, 512, 30)
    assert (optim.weight_decay, optim.layer_decay, optim.warmup_epochs) == (1e-8, 0.8, 0)
    assert FINETUNE.model.head_init_scale == 0.001 and FINETUNE.model.drop_path == 0.2
    assert FINETUNE.augment.mixup == FINETUNE.augment.cutmix == 0
    assert FINETUNE.model.finetune is None  # the weights are the user's


# --- schedule -------------------------------------------------------------------------------


def _todays_schedule(optimizer, warmup: int, total: int, min_lr: float):
    """The schedule before layer decay: LinearLR warm-up then CosineAnnealingLR to min_lr."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=min_lr)
    if warmup <= 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


def _rates(scheduler, optimizer, steps: int) -> list[list[float]]:
    """Each group's rate before each of ``steps`` optimizer steps and after the last."""
    rates = []
    for _ in range(steps):
        rates.append(list(scheduler.get_last_lr()))
        optimizer.step()
        scheduler.step()
    return [*rates, list(scheduler.get_last_lr())]


def _flat(rates: list[list[float]]) -> list[float]:
    return [rate for step in rates for rate in step]


@pytest.mark.parametrize(
    ("warmup_epochs", "steps_per_epoch", "epochs"), [(0.0, 7, 3), (1.5, 4, 5), (20.0, 3, 4)]
)
def test_layer_decay_one_follows_todays_schedule(warmup_epochs, steps_per_epoch, epochs) -> None:
    """``layer_decay`` 1: the same two groups and, step by step, the rates of today's
    LinearLR + CosineAnnealingLR (also when the warm-up is cut at ``total - 1`` steps)."""
    total = steps_per_epoch * epochs
    optim = OptimConfig(
        lr=2e-3, min_lr=1e-5, warmup_epochs=warmup_epochs, weight_decay=0.05, layer_decay=1.0
    )
    model = build("convnext_atto", width_factor=0.25)
    ours = build_optimizer(model, optim, 2e-3)
    theirs = torch.optim.AdamW(param_groups(model, 0.05), lr=2e-3)
    assert len(ours.param_groups) == len(theirs.param_groups) == 2
    for a, b in zip(ours.param_groups, theirs.param_groups, strict=True):
        assert a["params"] == b["params"] and a["weight_decay"] == b["weight_decay"]
    warmup = min(round(warmup_epochs * steps_per_epoch), total - 1)
    expected = _rates(_todays_schedule(theirs, warmup, total, 1e-5), theirs, total)
    got = _rates(build_scheduler(ours, optim, steps_per_epoch, total, 2e-3), ours, total)
    assert len(got) == total + 1
    assert _flat(got) == pytest.approx(_flat(expected), rel=1e-12, abs=1e-18)


def test_layer_decay_scales_each_groups_floor_and_resumes_at_a_step() -> None:
    """Every group follows one schedule times its ``lr_scale``: it ends at ``scale * min_lr``
    (one absolute floor would lift the slow groups up to min_lr); a scheduler built at step
    ``s`` gives the rates of one stepped ``s`` times."""
    optim = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_epochs=1.0, weight_decay=0.05, layer_decay=0.5)
    model = build("sw_atto", width_factor=0.25)
    optimizer = build_optimizer(model, optim, 1e-3)
    scales = [g["lr_scale"] for g in optimizer.param_groups]
    assert min(scales) < 0.1  # slow groups start below min_lr
    scheduler = build_scheduler(optimizer, optim, 5, 20, 1e-3)
    rates = _rates(scheduler, optimizer, 20)
    for t, step_rates in enumerate(rates):
        factor = step_rates[scales.index(1.0)] / 1e-3
        assert step_rates == pytest.approx([1e-3 * s * factor for s in scales], rel=1e-12)
        if t > 5:  # after the warm-up (peak at step 5) every rate decreases
            assert all(r <= p * (1 + 1e-12) for r, p in zip(step_rates, rates[t - 1], strict=True))
    assert rates[-1] == pytest.approx([1e-4 * s for s in scales], rel=1e-12)
    for step in (0, 3, 11):
        resumed = build_optimizer(build("sw_atto", width_factor=0.25), optim, 1e-3)
        build_scheduler(resumed, optim, 5, 20, 1e-3)
        later = build_scheduler(resumed, optim, 5, 20, 1e-3, step=step)
        assert later.get_last_lr() == pytest.approx(rates[step], rel=1e-12)
