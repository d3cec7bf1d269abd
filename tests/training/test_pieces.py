"""The trainer's pieces on their own: data order, RNG capture, learning-rate schedule."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

import shiftwise
from shiftwise.training.config import OptimConfig
from shiftwise.training.optimization import (
    build_optimizer,
    build_scheduler,
    param_groups,
    scaled_lr,
)
from shiftwise.training.rng import capture_rng, restore_rng
from shiftwise.training.sampler import EpochSampler


def test_ranks_share_one_seeded_permutation_and_a_resume_skips_its_prefix() -> None:
    ranks = [EpochSampler(10, 4, seed=3, rank=r, world=2) for r in range(2)]
    orders = [list(s) for s in ranks]
    assert all(len(o) == 4 for o in orders) and not set(orders[0]) & set(orders[1])
    assert [list(EpochSampler(10, 4, seed=3, rank=0, world=2))] == [orders[0]]  # seeded
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != orders[0]  # another epoch, another order
    ranks[0].set_epoch(0, skip=3)
    assert list(ranks[0]) == orders[0][3:] and len(ranks[0]) == 1


def test_captured_generators_replay_the_same_draws() -> None:
    state = capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


def test_schedule_warms_up_linearly_then_decays_to_min_lr() -> None:
    optim = OptimConfig(lr=1.0, min_lr=0.01, warmup_epochs=1.0, weight_decay=0.05)
    model = torch.nn.Linear(2, 2)
    groups = param_groups(model, optim.weight_decay)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]  # no decay on the 1-D bias
    optimizer = torch.optim.SGD(groups, lr=1.0)
    scheduler = build_scheduler(optimizer, optim, steps_per_epoch=4, total_steps=12, peak_lr=1.0)
    lrs = []
    for _ in range(12):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[4] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(lrs[:5]))
    assert all(a > b for a, b in itertools.pairwise(lrs[4:]))
    assert scheduler.get_last_lr()[0] == pytest.approx(0.01)


def test_lr_scales_with_the_effective_batch() -> None:
    optim = OptimConfig(lr=4e-3, lr_base_batch=4096, batch_size=128, accum_steps=2)
    assert scaled_lr(optim, world=4) == pytest.approx(4e-3 * 128 * 2 * 4 / 4096)


def test_weight_decay_follows_no_weight_decay_as_timm_does() -> None:
    """One rule for ``shiftwise train`` and timm's factory: >= 2-D weights decay, except the
    model's ``no_weight_decay()`` (GRN's gamma/beta, outside the sparse scope)."""
    model = shiftwise.create_model("sw_atto", width_factor=0.25)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert model.no_weight_decay() <= skipped
    assert all(".grn." in n for n in model.no_weight_decay()) and model.no_weight_decay()
    assert {names[id(p)] for p in decay["params"]} == {
        n for n, p in model.named_parameters() if p.ndim > 1 and ".grn." not in n
    }


def test_optimizer_is_the_fused_adamw_on_cpu() -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.05, layer_decay=1.0), lr=1e-3)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]
