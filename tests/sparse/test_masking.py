"""Masking engine: constant density, exact zeros, zero-start regrowth, resume, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from shiftwise.sparse import Masking, select_targets


def _masked_entries_zero(masking: Masking) -> bool:
    """Every pruned entry of every masked parameter is exactly zero."""
    for target in masking.targets:
        pruned = ~masking.masks[target.name]
        for param in target.params:
            if param[pruned.expand_as(param)].ne(0).any():
                return False
    return True


@pytest.mark.parametrize(
    ("granularity", "targets", "init", "density"),
    [("fine", "all", "erk", 0.6), ("group", "large_kernels", "uniform", 0.5)],
)
@pytest.mark.parametrize("growth", ["random", "gradient"])
def test_density_constant_and_pruned_exactly_zero_over_50_updates(
    tiny_net, batch, train_steps, granularity, targets, init, density, growth
):
    optimizer = torch.optim.AdamW(tiny_net.parameters(), lr=1e-2)
    masking = Masking(
        tiny_net,
        optimizer,
        density=density,
        init=init,
        growth=growth,
        update_freq=1,
        total_steps=1000,
        granularity=granularity,
        targets=targets,
        prune_rate=0.5,
    )
    start = masking.density()
    assert abs(start - density) <= 1e-3
    initial_masks = copy.deepcopy(masking.masks)
    seen = []

    def check() -> None:
        assert masking.density() == start
        assert _masked_entries_zero(masking)
        seen.append(masking.steps)

    train_steps(tiny_net, optimizer, masking, batch, 50, check)
    assert seen == list(range(1, 51))
    changed = sum(int((initial_masks[name] != mask).sum()) for name, mask in masking.masks.items())
    assert changed > 0, "50 updates should move some units"


def test_regrown_weights_and_optimizer_state_start_at_zero(tiny_net, batch, train_steps):
    optimizer = torch.optim.AdamW(tiny_net.parameters(), lr=1e-2)
    masking = Masking(
        tiny_net, optimizer, density=0.5, init="uniform", update_freq=None, total_steps=100,
        granularity="fine", targets="all", prune_rate=0.5,
    )  # fmt: skip
    train_steps(tiny_net, optimizer, masking, batch, 3)
    before = copy.deepcopy(masking.masks)
    replaced = masking.prune_and_regrow()
    assert sum(replaced.values()) > 0
    n_grown = 0
    for target in masking.targets:
        grown = masking.masks[target.name] & ~before[target.name]
        n_grown += int(grown.sum())
        for param in target.params:
            assert param[grown].eq(0).all()
            for key in ("exp_avg", "exp_avg_sq"):
                assert optimizer.state[param][key][grown].eq(0).all()
    assert n_grown > 0
    # The next steps train the regrown weights normally.
    train_steps(tiny_net, optimizer, masking, batch, 1)
    target = masking.targets[0]
    grown = masking.masks[target.name] & ~before[target.name]
    assert target.params[0][grown].ne(0).any()


def test_a_unit_pruned_and_regrown_in_one_update_restarts_from_zero(tiny_net, batch, train_steps):
    """The smallest active unit, with the largest gradient, is pruned and regrown by the same
    update: its mask stays set, yet its weight and its Adam moments must restart at zero."""
    optimizer = torch.optim.AdamW(tiny_net.parameters(), lr=1e-2)
    masking = Masking(
        tiny_net, optimizer, density=0.5, init="uniform", growth="gradient", update_freq=None,
        total_steps=100, granularity="fine", targets="all", prune_rate=1e-6, min_prune_rate=1e-6,
    )  # fmt: skip
    train_steps(tiny_net, optimizer, masking, batch, 3)
    target = masking.targets[0]
    mask = masking.masks[target.name]
    unit = torch.zeros_like(mask).flatten()
    unit[mask.flatten().nonzero()[0]] = True
    unit = unit.reshape(mask.shape)
    with torch.no_grad():
        for param in target.params:
            param.masked_fill_(unit, 1e-8)  # the smallest magnitude: pruned first
            param.grad.masked_fill_(unit, 1e3)  # the largest gradient: regrown first
            state = optimizer.state[param]
            assert all(state[key][unit.expand_as(param)].ne(0).all() for key in ("exp_avg",))
    assert masking.prune_and_regrow()[target.name] == 1
    assert masking.masks[target.name][unit].all()
    for param in target.params:
        selected = unit.expand_as(param)
        assert param[selected].eq(0).all()
        for key in ("exp_avg", "exp_avg_sq"):
            assert optimizer.state[param][key][selected].eq(0).all(), key


def test_sgd_momentum_buffer_is_masked(tiny_net, batch, train_steps):
    optimizer = torch.optim.SGD(tiny_net.parameters(), lr=0.1, momentum=0.9)
    masking = Masking(
        tiny_net, optimizer, density=0.5, init="uniform", update_freq=None, total_steps=10
    )
    train_steps(tiny_net, optimizer, masking, batch, 2)
    for target in masking.targets:
        pruned = ~masking.masks[target.name]
        for param in target.params:
            buffer = optimizer.state[param]["momentum_buffer"]
            assert buffer[pruned.expand_as(buffer)].eq(0).all()


@pytest.mark.parametrize("granularity", ["fine", "group"])
def test_sw_paths_share_one_mask(tiny_net, batch, train_steps, granularity):
    optimizer = torch.optim.AdamW(tiny_net.parameters(), lr=1e-2)
    masking = Masking(
        tiny_net, optimizer, density=0.5, init="uniform", update_freq=2, total_steps=100,
        granularity=granularity,
    )  # fmt: skip
    train_steps(tiny_net, optimizer, masking, batch, 6)
    sw_targets = [t for t in masking.targets if t.owner is not None]
    assert len(sw_targets) == 2
    for target in sw_targets:
        assert len(target.params) == 2
        expected = target.shape if granularity == "fine" else (target.shape[0], 1, 1, 1)
        assert masking.masks[target.name].shape == expected
    assert _masked_entries_zero(masking)


def test_resume_continues_with_identical_masks_schedule_and_weights(
    batch, train_steps, tiny_net_class
):
    def build(seed: int):
        torch.manual_seed(seed)
        model = tiny_net_class()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        masking = Masking(
            model, optimizer, density=0.6, init="erk", growth="random", update_freq=3,
            total_steps=40, granularity="group", seed=seed,
        )  # fmt: skip
        return model, optimizer, masking

    model, optimizer, masking = build(0)
    train_steps(model, optimizer, masking, batch, 7)
    checkpoint = copy.deepcopy(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "masking": masking.state_dict(),
        }
    )
    train_steps(model, optimizer, masking, batch, 10)

    resumed_model, resumed_optimizer, resumed = build(7)
    resumed_model.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed.load_state_dict(checkpoint["masking"])
    assert resumed.steps == 7
    train_steps(resumed_model, resumed_optimizer, resumed, batch, 10)

    assert resumed.steps == masking.steps == 17
    assert resumed.prune_rate == masking.prune_rate
    for name, mask in masking.masks.items():
        assert torch.equal(resumed.masks[name], mask), name
    for (name, a), b in zip(
        model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_load_state_dict_rejects_other_models(tiny_net):
    optimizer = torch.optim.SGD(tiny_net.parameters(), lr=0.1)
    masking = Masking(tiny_net, optimizer, density=0.5, init="uniform", total_steps=10)
    state = masking.state_dict()
    other = Masking(tiny_net, optimizer, density=0.5, init="uniform", total_steps=10, targets="all")
    with pytest.raises(ValueError, match="state"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="state"):
        masking.load_state_dict({"steps": 3})


def test_snip_keeps_the_top_scored_units(tiny_net, batch):
    inputs, labels = batch
    reference = copy.deepcopy(tiny_net)
    optimizer = torch.optim.SGD(tiny_net.parameters(), lr=0.1)
    grads_before = [p.grad for p in tiny_net.parameters()]
    masking = Masking(
        tiny_net, optimizer, density=0.4, init="snip", total_steps=10, granularity="group",
        snip_data=(inputs, labels),
    )  # fmt: skip
    assert all(g is None for g in grads_before)
    assert all(p.grad is None for p in tiny_net.parameters())
    assert abs(masking.density() - 0.4) < 0.03
    loss = nn.functional.cross_entropy(reference(inputs), labels)
    loss.backward()
    params = dict(reference.named_parameters())
    kept, dropped = [], []
    for target in masking.targets:
        products = [params[n].detach() * params[n].grad for n in target.param_names]
        score = (target.unit_sum(products) / target.unit_size).flatten()
        mask = masking.masks[target.name].flatten()
        kept.append(score[mask])
        dropped.append(score[~mask])
    assert torch.cat(kept).min() >= torch.cat(dropped).max()


def test_apply_mask_to_an_ema_copy(tiny_net, batch, train_steps):
    optimizer = torch.optim.AdamW(tiny_net.parameters(), lr=1e-2)
    ema = torch.optim.swa_utils.AveragedModel(
        tiny_net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.5)
    )
    masking = Masking(
        tiny_net, optimizer, density=0.5, init="uniform", update_freq=1, total_steps=10
    )
    for _ in range(3):
        train_steps(tiny_net, optimizer, masking, batch, 1)
        ema.update_parameters(tiny_net)
    masking.apply_mask_to(ema)
    params = dict(ema.module.named_parameters())
    for target in masking.targets:
        pruned = ~masking.masks[target.name]
        for name in target.param_names:
            assert params[name][pruned.expand_as(params[name])].eq(0).all()
    with pytest.raises(ValueError, match="model"):
        masking.apply_mask_to(nn.Linear(2, 2))


def test_works_under_amp_with_a_grad_scaler(tiny_net, batch):
    """The official repos never call the mask step on their AMP path; here the user does."""
    inputs, labels = batch
    optimizer = torch.optim.AdamW(tiny_net.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu")
    masking = Masking(
        tiny_net, optimizer, density=0.5, init="uniform", update_freq=2, total_steps=20,
        granularity="group",
    )  # fmt: skip
    start = masking.density()
    for _ in range(4):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(tiny_net(inputs), labels)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        masking.step()
        assert _masked_entries_zero(masking)
        assert masking.density() == start


def test_dense_init_keeps_everything(tiny_net, batch, train_steps):
    optimizer = torch.optim.SGD(tiny_net.parameters(), lr=0.1)
    masking = Masking(tiny_net, optimizer, init="dense", update_freq=1, total_steps=10)
    train_steps(tiny_net, optimizer, masking, batch, 2)
    assert masking.density() == 1.0


def test_large_kernel_scope_selects_each_papers_weights(tiny_net):
    names = {t.name for t in select_targets(tiny_net)}
    assert names == {
        "stages.0.0.paths",
        "stages.0.1.tall.conv.weight",
        "stages.0.1.wide.conv.weight",
        "stages.1.0.paths",
    }
    patterns = select_targets(tiny_net, ["*.paths.1.weight"], "group")
    assert [t.name for t in patterns] == ["stages.0.0.paths", "stages.1.0.paths"]
    assert all(len(t.params) == 2 and t.mask_shape[1:] == (1, 1, 1) for t in patterns)
    only_head = select_targets(tiny_net, lambda name, p: name == "head.weight")
    assert [t.name for t in only_head] == ["head.weight"]


def test_gradient_growth_needs_gradients(tiny_net, batch, train_steps):
    optimizer = torch.optim.SGD(tiny_net.parameters(), lr=0.1)
    masking = Masking(
        tiny_net, optimizer, density=0.5, init="uniform", growth="gradient", update_freq=1,
        total_steps=10,
    )  # fmt: skip
    train_steps(tiny_net, optimizer, masking, batch, 1)
    optimizer.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="zero_grad"):
        masking.prune_and_regrow()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"density": 0.0}, ValueError, "density"),
        ({"density": 1.5}, ValueError, "density"),
        ({"density": "0.5"}, TypeError, "density"),
        ({"init": "ERK"}, ValueError, "init"),
        ({"growth": "momentum"}, ValueError, "growth"),
        ({"update_freq": 0}, ValueError, "update_freq"),
        ({"total_steps": 0}, ValueError, "total_steps"),
        ({"granularity": "chunk"}, ValueError, "granularity"),
        ({"targets": "everything"}, ValueError, "targets"),
        ({"targets": ["nothing.*"]}, ValueError, "targets"),
        ({"targets": ["head.*"], "granularity": "group"}, ValueError, "granularity"),
        ({"init": "snip"}, ValueError, "snip_data"),
        ({"prune_rate": 1.5}, ValueError, "prune_rate"),
    ],
)
def test_bad_arguments_are_named(tiny_net, kwargs, error, match):
    optimizer = torch.optim.SGD(tiny_net.parameters(), lr=0.1)
    arguments = {"total_steps": 10} | kwargs
    with pytest.raises(error, match=match):
        Masking(tiny_net, optimizer, **arguments)
    with pytest.raises(TypeError, match="optimizer"):
        Masking(tiny_net, object(), total_steps=10)
