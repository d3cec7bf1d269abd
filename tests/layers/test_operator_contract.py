"""What every large-kernel operator promises: drop-in semantics, one interface, one set of rules."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from testing_utils import randomize_batchnorm
from torch import nn

import shiftwise
from shiftwise.analysis.complexity import count_macs
from shiftwise.layers import (
    KernelWeights,
    LargeKernelOperator,
    RepLKConv2d,
    ShiftWiseConv2d,
    SLaKConv2d,
)
from shiftwise.layers.conv_bn import bn_scale_shift
from shiftwise.models.operators import build_operator, list_operators
from shiftwise.sparse import Masking

OPERATORS = [ShiftWiseConv2d, SLaKConv2d, RepLKConv2d]


@pytest.mark.parametrize("operator", OPERATORS)
def test_default_operator_equals_its_equivalent_kernel_as_a_plain_conv(operator):
    """README-style use: no channel reordering with default arguments."""
    torch.manual_seed(0)
    op = operator(16).double()
    randomize_batchnorm(op)
    op.eval()
    x = torch.randn(2, 16, 12, 15, dtype=torch.float64)
    weight, bias = op.equivalent_kernel()
    dense = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=16)
    torch.testing.assert_close(op(x), dense, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", list_operators())
def test_every_registered_operator_equals_its_equivalent_kernel(name):
    """Whatever the registry builds by name: a depthwise "same" operator, and for one of the
    interface, its eval-mode output is the one conv of its equivalent kernel."""
    torch.manual_seed(0)
    op = build_operator(name, 16, 13).double()
    randomize_batchnorm(op)
    op.eval()
    x = torch.randn(2, 16, 12, 15, dtype=torch.float64)
    with torch.no_grad():
        out = op(x)
    assert out.shape == x.shape
    if isinstance(op, LargeKernelOperator):
        weight, bias = op.equivalent_kernel()
        dense = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=16)
        torch.testing.assert_close(out, dense, atol=1e-10, rtol=0)


@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"kernel_size": 12}, ValueError, "kernel_size"),
        ({"kernel_size": -3}, ValueError, "kernel_size"),
        ({"kernel_size": 13.0}, TypeError, "kernel_size"),
        ({"kernel_size": 5, "small_kernel": 7}, ValueError, "small_kernel"),
        ({"small_kernel": 4}, ValueError, "small_kernel"),
        ({"small_kernel": True}, TypeError, "small_kernel"),
        ({"channels": 0}, ValueError, "channels"),
        ({"channels": 2.5}, TypeError, "channels"),
    ],
)
def test_operators_share_the_validation_rules(operator, kwargs, error, name):
    args = {"channels": 8, "kernel_size": 13, "small_kernel": 3} | kwargs
    with pytest.raises(error, match=name):
        operator(**args)


def test_operators_share_the_autocast_dtype():
    x = torch.randn(1, 16, 10, 10)
    dtypes = set()
    for operator in OPERATORS:
        op = operator(16, 13, small_kernel=3).eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            dtypes.add(op(x).dtype)
    assert dtypes == {torch.bfloat16}


def _deployed_sw(
    pruned: bool, form: str = "auto", channel_order: str = "input"
) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    op = ShiftWiseConv2d(12, 9, 3, channel_order=channel_order).double()
    randomize_batchnorm(op)
    if pruned:
        with torch.no_grad():
            for path in op.paths:
                path.weight[::3] = 0.0
    return op.eval().inference_module(form), torch.randn(2, 12, 8, 11, dtype=torch.float64)


@pytest.mark.parametrize("pruned", [False, True])
@pytest.mark.parametrize("form", ["strips", "pieces"])
def test_deployed_sw_has_no_dead_parameter(pruned, form):
    """Every entry of every parameter and every whole parameter shapes the deployed output."""
    op, x = _deployed_sw(pruned, form)
    names = [name for name, _ in op.named_parameters()]
    if form == "strips":
        assert sorted(names) == ["bias", "horizontal", "vertical"]
    else:
        assert sorted(names) == ["branch_bias", "branch_scale", "weight"]
        assert op.pruned == pruned
    with torch.no_grad():
        expected = op(x)
        for name, param in op.named_parameters():
            param.mul_(2.0)
            assert not torch.allclose(op(x), expected), f"doubling {name} changes nothing"
            param.div_(2.0)
    # Entry by entry: the gradient of a generic weighted sum reaches every parameter entry.
    weights = torch.randn(expected.shape, dtype=torch.float64)
    grads = torch.autograd.grad((op(x) * weights).sum(), list(op.parameters()))
    for name, grad in zip(names, grads, strict=True):
        assert bool((grad != 0).all()), f"{name} has entries the output does not depend on"


@pytest.mark.parametrize("channel_order", ["input", "official"])
def test_deployed_sw_absorbs_an_output_affine_and_releases_its_order(channel_order):
    op, x = _deployed_sw(pruned=False, channel_order=channel_order)
    scale, shift = torch.randn(2, 12, dtype=torch.float64)
    with torch.no_grad():
        expected = op(x) * scale[:, None, None] + shift[:, None, None]
        assert op.absorb_output_affine(scale, shift)
        torch.testing.assert_close(op(x), expected, rtol=1e-12, atol=1e-12)
        order = op.release_output_order()
        assert (order is None) == (channel_order == "input") and op.release_output_order() is None
        assert sorted(op.state_dict()) == ["bias", "horizontal", "vertical"]
        released = op(x) if order is None else op(x)[:, order]
        torch.testing.assert_close(released, expected, rtol=1e-12, atol=1e-12)
        weight, bias = op.equivalent_kernel()
        dense = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=12)
        torch.testing.assert_close(dense, op(x), rtol=1e-12, atol=1e-12)
    pieces, _ = _deployed_sw(pruned=False, form="pieces")
    assert not pieces.absorb_output_affine(scale, shift) and pieces.release_output_order() is None


def test_deployed_sw_buffers_are_what_its_form_reads():
    op, _ = _deployed_sw(pruned=True)  # full-channel strips in input order: no channel split
    assert sorted(op.state_dict()) == ["bias", "horizontal", "vertical"]
    assert op.horizontal.shape[0] == op.vertical.shape[0] == op.bias.shape[0] == op.channels
    official, _ = _deployed_sw(pruned=True, channel_order="official")  # its output reorder
    assert sorted(official.state_dict()) == ["bias", "horizontal", "output_order", "vertical"]
    op, _ = _deployed_sw(pruned=True, form="pieces")
    persistent = sorted(op.state_dict())
    assert persistent == sorted(
        [
            "active_index",
            "branch_bias",
            "branch_scale",
            "ghost_index",
            "horizontal_index",
            "identity_index",
            "rep_index",
            "vertical_index",
            "weight",
        ]
    )
    assert sorted(name for name, _ in op.named_buffers()) == sorted(
        set(persistent) - {"branch_bias", "branch_scale", "weight"}
    )


class ToyOperator(LargeKernelOperator):
    """A plain depthwise ``K x K`` conv + BN, written against the interface only."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
                              groups=channels, bias=False)  # fmt: skip
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = bn_scale_shift(self.bn)
        return self.conv.weight * scale[:, None, None, None], shift

    def inference_module(self, form: str = "auto") -> nn.Module:
        weight, bias = self.equivalent_kernel()
        conv = nn.Conv2d(self.channels, self.channels, weight.shape[-1],
                         padding=weight.shape[-1] // 2, groups=self.channels)  # fmt: skip
        conv.load_state_dict({"weight": weight, "bias": bias})
        return conv

    def large_kernel_parameters(self) -> list[KernelWeights]:
        return [KernelWeights("conv.weight", ("conv.weight",))]

    def macs(self, input_size: tuple[int, int]) -> int:
        return self.conv.weight[0].numel() * self.channels * input_size[0] * input_size[1]


def test_a_new_operator_gets_sparse_training_counting_and_deploy_from_the_interface():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), ToyOperator(8, 7), nn.Conv2d(8, 4, 1))
    randomize_batchnorm(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    masking = Masking(model, optimizer, density=0.5, init="uniform", total_steps=1)
    assert [t.name for t in masking.targets] == ["1.conv.weight"]
    assert int(model[1].conv.weight.ne(0).sum()) == 8 * 49 // 2
    macs = count_macs(model, (32, 32))
    assert [p.macs for p in macs] == [3 * 8 * 1024, 8 * 49 * 1024, 8 * 4 * 1024, 448 * 1024]
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    expected = model(x)
    deployed = shiftwise.reparameterize(copy.deepcopy(model))
    assert type(deployed[1]) is nn.Conv2d  # the operator's inference form
    torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=0)
