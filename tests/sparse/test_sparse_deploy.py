"""Deploy of group-sparse SW operators: pruned pieces leave the computation, outputs unchanged."""

from __future__ import annotations

import pytest
import torch

from shiftwise.layers import ShiftWiseConv2d
from shiftwise.layers.sparse_deploy import CompactShiftAdd, active_pieces
from shiftwise.sparse import Masking, sparsity_report


def _random_eval_op(channels, kernel, small, keep_order=False, seed=0) -> ShiftWiseConv2d:
    torch.manual_seed(seed)
    op = ShiftWiseConv2d(channels, kernel, small, keep_channel_order=keep_order).double().eval()
    with torch.no_grad():
        for bn in (op.bn_h, op.bn_v, op.bn_identity):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    return op


def _prune_pieces(op: ShiftWiseConv2d, fraction: float, seed: int = 0) -> torch.Tensor:
    """Zero a random ``fraction`` of the pieces in every path; returns the kept-piece mask."""
    n_pieces = op.paths[0].weight.shape[0]
    generator = torch.Generator().manual_seed(seed)
    keep = torch.ones(n_pieces, dtype=torch.bool)
    keep[torch.randperm(n_pieces, generator=generator)[: round(fraction * n_pieces)]] = False
    with torch.no_grad():
        for path in op.paths:
            path.weight[~keep] = 0.0
    return keep


@pytest.mark.parametrize(
    ("channels", "kernel", "small", "size", "fraction", "keep_order"),
    [
        (12, 13, 3, (9, 11), 0.3, False),
        (12, 13, 3, (5, 4), 0.6, True),
        (10, 11, 5, (13, 7), 0.6, False),
        (16, 7, 3, (1, 3), 0.5, False),
        (12, 13, 3, (8, 8), 1.0, False),
    ],
)
def test_deploy_removes_pruned_pieces_and_keeps_outputs(
    channels, kernel, small, size, fraction, keep_order
):
    op = _random_eval_op(channels, kernel, small, keep_order)
    keep = _prune_pieces(op, fraction)
    x = torch.randn(2, channels, *size, dtype=torch.float64)
    expected = op(x)
    kernel_before, bias_before = op.equivalent_kernel()
    op.reparameterize()
    assert isinstance(op.merged, CompactShiftAdd)
    assert op.merged.n_active == int(keep.sum())
    for strategy in ("fused", "strips", "reference"):  # fused runs the compact form
        op.strategy = strategy
        torch.testing.assert_close(op(x), expected, rtol=0, atol=1e-12)
    kernel_after, bias_after = op.equivalent_kernel()
    torch.testing.assert_close(kernel_after, kernel_before, rtol=0, atol=1e-12)
    torch.testing.assert_close(bias_after, bias_before, rtol=0, atol=1e-12)
    torch.testing.assert_close(op.to_dense()(x), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("layout", ["gather", "padded"])
@pytest.mark.parametrize("fraction", [0.0, 0.4, 0.9])
def test_compact_layouts_compute_the_full_shift_add(layout, fraction):
    op = _random_eval_op(12, 13, 3, seed=3)
    keep = _prune_pieces(op, fraction, seed=4)
    x_rep = torch.randn(2, op.n_rep, 7, 9, dtype=torch.float64)
    expected = op.branches(x_rep)
    tables = {
        "horizontal": (op.horizontal_index, op.horizontal_offsets),
        "vertical": (op.vertical_index, op.vertical_offsets),
        "identity": (op.identity_index, op.identity_offsets),
    }
    weight = op.piece_weight().detach()
    compact = CompactShiftAdd(weight, op.geometry.n_pieces, 2, tables, layout=layout)
    assert compact.layout == layout and compact.n_active == int(keep.sum())
    slots = compact.weight.shape[0]
    if layout == "gather":
        assert slots == int(keep.sum())
    else:
        per_channel = keep.reshape(op.n_rep, -1).sum(1)
        assert slots == op.n_rep * int(per_channel.max())
    for got, want in zip(compact(x_rep, (7, 9)), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(compact.full_weight(), weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match="layout"):
        CompactShiftAdd(weight, op.geometry.n_pieces, 2, tables, layout="sparse")


def test_dense_sw_keeps_the_plain_deploy_form():
    op = _random_eval_op(12, 13, 3)
    op.reparameterize()
    assert isinstance(op.merged, torch.nn.Conv2d)


def test_active_pieces_and_full_weight_round_trip():
    weight = torch.randn(12, 1, 3, 3, dtype=torch.float64)
    weight[[1, 4, 5]] = 0.0
    weight[7, 0, 1, 1] = 0.0  # a piece with one zero tap stays active
    active = active_pieces(weight)
    assert active.tolist() == [0, 2, 3, 6, 7, 8, 9, 10, 11]
    op = _random_eval_op(8, 13, 3)
    tables = {
        "horizontal": (op.horizontal_index, op.horizontal_offsets),
        "vertical": (op.vertical_index, op.vertical_offsets),
        "identity": (op.identity_index, op.identity_offsets),
    }
    full = torch.randn(op.n_rep * op.geometry.n_pieces, 1, 3, 3, dtype=torch.float64)
    full[::3] = 0.0
    compact = CompactShiftAdd(full, op.geometry.n_pieces, op.geometry.conv_padding, tables)
    torch.testing.assert_close(compact.full_weight(), full, rtol=0, atol=0)
    with pytest.raises(ValueError, match="tables"):
        CompactShiftAdd(full, op.geometry.n_pieces, 2, {"horizontal": tables["horizontal"]})


def test_group_sparse_trained_model_deploys_exactly(tiny_net, batch, train_steps):
    tiny_net.double()
    inputs, labels = batch
    optimizer = torch.optim.AdamW(tiny_net.parameters(), lr=1e-2)
    masking = Masking(
        tiny_net, optimizer, density=0.5, init="uniform", update_freq=2, total_steps=20,
        granularity="group",
    )  # fmt: skip
    train_steps(tiny_net, optimizer, masking, (inputs.double(), labels), 5)  # regrown ones move
    tiny_net.eval()
    expected = tiny_net(inputs.double())
    before = sparsity_report(tiny_net)
    for module in tiny_net.modules():
        if hasattr(module, "reparameterize"):
            module.reparameterize()
    for strategy in ("fused", "strips"):
        for module in tiny_net.modules():
            if isinstance(module, ShiftWiseConv2d):
                module.strategy = strategy
        torch.testing.assert_close(tiny_net(inputs.double()), expected, rtol=0, atol=1e-12)
    after = sparsity_report(tiny_net)
    assert [s.fraction for s in after.stages] == [s.fraction for s in before.stages]
    assert [s.fraction for s in after.stages] == [0.5, 0.5]
    sw = [m for m in tiny_net.modules() if isinstance(m, ShiftWiseConv2d)]
    assert all(isinstance(m.merged, CompactShiftAdd) for m in sw)
    assert all(m.merged.n_active * 2 == m.n_rep * m.geometry.n_pieces for m in sw)


def test_reparameterize_model_deploys_group_sparse_sw_atto_exactly():
    import shiftwise

    torch.manual_seed(0)
    model = shiftwise.create_model("sw_atto", width_factor=0.5, num_classes=4).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    Masking(model, optimizer, density=0.5, init="uniform", granularity="group", total_steps=1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("blocks.0.gamma") or name.endswith("blocks.1.gamma"):
                param.fill_(1.0)  # layer scale 1e-6 would hide any operator error
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    expected = model(x)
    shiftwise.reparameterize(model)
    sw = [m for m in model.modules() if isinstance(m, ShiftWiseConv2d)]
    assert sw and all(isinstance(m.merged, CompactShiftAdd) for m in sw)
    assert all(m.merged.n_active * 2 == m.n_rep * m.geometry.n_pieces for m in sw)
    for strategy in ("fused", "strips"):
        for module in sw:
            module.strategy = strategy
        torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)
