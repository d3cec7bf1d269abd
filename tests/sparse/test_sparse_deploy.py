"""Deploy of group-sparse SW operators: pruned pieces leave the computation, outputs unchanged."""

from __future__ import annotations

import copy

import pytest
import torch

import shiftwise
from shiftwise.layers import ShiftAddPieces, ShiftWiseConv2d, StripDepthwiseConv2d
from shiftwise.sparse import Masking, sparsity_report


def _random_eval_op(channels, kernel, small, order="input", seed=0) -> ShiftWiseConv2d:
    torch.manual_seed(seed)
    op = ShiftWiseConv2d(channels, kernel, small, channel_order=order).double().eval()
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
    ("channels", "kernel", "small", "size", "fraction", "order"),
    [
        (12, 13, 3, (9, 11), 0.3, "official"),
        (12, 13, 3, (5, 4), 0.6, "input"),
        (10, 11, 5, (13, 7), 0.6, "official"),
        (16, 7, 3, (1, 3), 0.5, "official"),
        (12, 13, 3, (7, 9), 0.9, "input"),
        (12, 13, 3, (8, 8), 1.0, "official"),
    ],
)
def test_deploy_removes_pruned_pieces_and_keeps_outputs(
    channels, kernel, small, size, fraction, order
):
    op = _random_eval_op(channels, kernel, small, order)
    keep = _prune_pieces(op, fraction)
    x = torch.randn(2, channels, *size, dtype=torch.float64)
    expected = op(x)
    kernel_before, bias_before = op.equivalent_kernel()
    pieces_before = op.piece_weight().detach()
    pieces = op.inference_module("pieces")
    assert pieces.active_index.tolist() == keep.nonzero().flatten().tolist()
    assert pieces.weight.shape[0] == int(keep.sum())
    torch.testing.assert_close(pieces.piece_weight(), pieces_before, rtol=0, atol=0)
    reference = op.with_strategy("reference").inference_module("pieces")
    for module in (pieces, reference):  # active pieces only
        torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-12)
    strips = op.inference_module("strips")
    assert strips.piece_counts() == pieces.piece_counts() == (int(keep.sum()), keep.numel())
    torch.testing.assert_close(strips(x), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(strips.equivalent_kernel()[0], kernel_before, rtol=0, atol=1e-12)
    kernel_after, bias_after = pieces.equivalent_kernel()
    torch.testing.assert_close(kernel_after, kernel_before, rtol=0, atol=1e-12)
    torch.testing.assert_close(bias_after, bias_before, rtol=0, atol=1e-12)
    torch.testing.assert_close(op.inference_module("dense")(x), expected, rtol=0, atol=1e-10)


def test_dense_sw_keeps_every_piece():
    op = _random_eval_op(12, 13, 3).inference_module("pieces")
    assert not op.pruned
    assert op.weight.shape == (op.n_rep * op.geometry.n_pieces, 1, 3, 3)


def test_a_piece_with_some_zero_taps_stays_active():
    op = _random_eval_op(8, 13, 3)
    with torch.no_grad():
        for path in op.paths:
            path.weight[[1, 4, 5]] = 0.0
            path.weight[7, 0, 1, 1] = 0.0
    op = op.inference_module("pieces")
    total = op.n_rep * op.geometry.n_pieces
    assert op.active_index.tolist() == [i for i in range(total) if i not in (1, 4, 5)]


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
    for form in ("pieces", "strips"):
        net = shiftwise.reparameterize(copy.deepcopy(tiny_net), form)
        torch.testing.assert_close(net(inputs.double()), expected, rtol=0, atol=1e-12)
        after = sparsity_report(net)
        assert [s.fraction for s in after.stages] == [s.fraction for s in before.stages]
        assert [s.fraction for s in after.stages] == [0.5, 0.5]
    sw = [m for m in net.modules() if isinstance(m, StripDepthwiseConv2d)]
    assert sw and all(m.pieces[0] * 2 == m.pieces[1] for m in sw)


def test_reparameterize_model_deploys_group_sparse_sw_atto_exactly():
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
    for form, module in (("pieces", ShiftAddPieces), ("strips", StripDepthwiseConv2d)):
        deployed = shiftwise.reparameterize(copy.deepcopy(model), form)
        sw = [m for m in deployed.modules() if isinstance(m, module)]
        assert sw and all(2 * m.piece_counts()[0] == m.piece_counts()[1] for m in sw)
        assert not any(isinstance(m, ShiftWiseConv2d) for m in deployed.modules())
        torch.testing.assert_close(deployed(x), expected, rtol=1e-10, atol=1e-10)
