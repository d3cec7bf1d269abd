"""Execution strategies of ShiftWiseConv2d and the oriented / strip deploy forms of SLaK."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from testing_utils import randomize_batchnorm

from shiftwise.layers import (
    DenseDepthwiseConv2d,
    DepthwiseConvSum,
    RepLKConv2d,
    ShiftAddPieces,
    ShiftWiseConv2d,
    SLaKConv2d,
    StripDepthwiseConv2d,
)
from shiftwise.layers.shiftwise_conv import resolve_strategy
from shiftwise.ops.oriented_conv import depthwise_conv2d

FAST = ("strips", "fused")


def run(op, x, strategy):
    """Output and gradients (input and every parameter) of a weighted sum of the output."""
    op = op.with_strategy(strategy)
    out = op(x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * weights).sum(), [x, *op.parameters()])
    return out, grads


@settings(max_examples=12, deadline=None)
@given(
    kernel=st.sampled_from([3, 5, 7, 9, 13]),
    small=st.sampled_from([1, 3]),
    shuffles=st.integers(1, 3),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    train=st.booleans(),
)
@example(kernel=3, small=1, shuffles=1, height=1, width=2, train=False)  # index_copy_ backward
def test_strategies_equal_reference_forward_and_backward(
    kernel, small, shuffles, height, width, train
):
    """Training mode (BN batch statistics) and eval mode, float64, non-square inputs."""
    generator = torch.Generator().manual_seed(kernel * 100 + height * 10 + width)
    op = ShiftWiseConv2d(7, kernel, small, ghost_ratio=0.3, n_shuffles=shuffles, seed=5)
    op = op.double().train(train)
    randomize_batchnorm(op, generator)
    x = torch.randn(2, 7, height, width, dtype=torch.float64, generator=generator)
    x.requires_grad_()
    expected_out, expected_grads = run(op, x, "reference")
    for strategy in FAST:
        out, grads = run(op, x, strategy)
        torch.testing.assert_close(out, expected_out, atol=1e-12, rtol=0)
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want, atol=1e-11, rtol=0)


@pytest.mark.parametrize("kernel", [51, 49, 47, 13])
def test_strips_match_reference_at_sw_t_kernels_float32(kernel):
    """The SW-T stage kernels (asymmetric spans for 49, 47, 13), deployed form included."""
    torch.manual_seed(kernel)
    op = ShiftWiseConv2d(12, kernel).eval()
    randomize_batchnorm(op)
    x = torch.randn(1, 12, 11, 14)
    expected = op.with_strategy("reference")(x)
    torch.testing.assert_close(op.with_strategy("strips")(x), expected, atol=1e-5, rtol=0)
    forms = {"strips": StripDepthwiseConv2d, "fused": ShiftAddPieces}
    for strategy, form in forms.items():
        deployed = op.with_strategy(strategy).inference_module()
        assert type(deployed) is form
        torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=0)


def test_strategy_is_resolved_once_and_copies_leave_the_original_alone():
    model = torch.nn.Sequential(ShiftWiseConv2d(8, 7), ShiftWiseConv2d(8, 9, strategy="fused"))
    assert [m.strategy for m in model] == ["strips", "fused"]
    forced = [m.with_strategy("reference") for m in model]
    assert [m.strategy for m in forced] == ["reference", "reference"]
    assert [m.strategy for m in model] == ["strips", "fused"]
    assert resolve_strategy("auto") == "strips"
    assert resolve_strategy("auto", density=0.1, device="cuda") == "fused"
    assert resolve_strategy("auto", density=0.5, device="cuda") == "strips"
    with pytest.raises(ValueError, match="strategy"):
        ShiftWiseConv2d(8, 7, strategy="fast")
    with pytest.raises(ValueError, match="strategy"):
        model[0].with_strategy("gpu")


def test_sparse_deploy_keeps_active_pieces_only_and_every_strategy_agrees():
    op = ShiftWiseConv2d(8, 13).eval()
    with torch.no_grad():
        for path in op.paths:
            path.weight[1:] = 0  # one active piece out of Cr * nk
    x = torch.randn(1, 8, 6, 6)
    expected = op(x)
    strips = op.inference_module()
    assert isinstance(strips, StripDepthwiseConv2d)  # on CPU, whatever the density
    assert strips.piece_counts() == (1, op.n_rep * op.geometry.n_pieces)
    pieces = op.with_strategy("fused").inference_module()
    assert pieces.weight.shape[0] == 1 and pieces.active_index.tolist() == [0]
    reference = op.with_strategy("reference").inference_module()
    assert reference.reference and not pieces.reference
    dense = op.inference_module("dense")
    assert isinstance(dense, DenseDepthwiseConv2d)
    for module in (strips, pieces, reference, dense, op.inference_module("pieces")):
        torch.testing.assert_close(module(x), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="form"):
        op.inference_module("fused")


@pytest.mark.parametrize("padding", [(1, 1, 3, 3), (0, 2, 4, 1)])
def test_transposed_orientation_is_exact(padding):
    x = torch.randn(2, 3, 6, 9, dtype=torch.float64)
    weight = torch.randn(3, 1, 3, 7, dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64)
    expected = F.conv2d(
        F.pad(x, (padding[2], padding[3], padding[0], padding[1])), weight, bias, groups=3
    )
    torch.testing.assert_close(
        depthwise_conv2d(x, weight, bias, padding, transposed=True), expected
    )


@settings(max_examples=15, deadline=None)
@given(
    kernel=st.sampled_from([5, 7, 13]),
    short=st.sampled_from([1, 3, 5]),
    small=st.sampled_from([None, 3, 5, 7]),
    form=st.sampled_from(["auto", "dense", "strips"]),
)
def test_slak_forms_exact(kernel, short, small, form):
    """Oriented training forward (grads too) and every deploy form equal the plain branches."""
    torch.manual_seed(kernel + short)
    small = None if small is None else min(small, kernel)
    op = SLaKConv2d(4, kernel, short, small).double().eval()
    randomize_batchnorm(op)
    x = torch.randn(2, 4, 8, 11, dtype=torch.float64, requires_grad=True)
    plain = sum(branch(x) for branch in op.branches())
    torch.testing.assert_close(op(x), plain, atol=1e-12, rtol=0)
    grad_plain = torch.autograd.grad(plain.sum(), x)[0]
    torch.testing.assert_close(torch.autograd.grad(op(x).sum(), x)[0], grad_plain)
    deployed = op.inference_module(form)
    dense_form = form == "dense" or (form == "auto" and short == kernel)
    expected_type = DenseDepthwiseConv2d if dense_form else DepthwiseConvSum
    assert type(deployed) is expected_type
    torch.testing.assert_close(deployed(x), plain, atol=1e-12, rtol=0)
    for module in (op, deployed):
        weight, bias = module.equivalent_kernel()
        dense = F.conv2d(x, weight, bias, padding=kernel // 2, groups=4)
        torch.testing.assert_close(dense, plain, atol=1e-12, rtol=0)


def test_slak_strips_deploy_has_two_convs_and_large_kernel_stays_dense():
    deployed = SLaKConv2d(6, 13, 5, 5).eval().inference_module()
    assert [tuple(c.weight.shape[-2:]) for c in deployed.convs] == [(13, 5), (5, 13)]
    large = RepLKConv2d(6, 9, 3).eval().inference_module()
    assert isinstance(large, DenseDepthwiseConv2d) and large.weight.shape == (6, 1, 9, 9)
    with pytest.raises(ValueError, match="form"):
        SLaKConv2d(6, 13).inference_module("pieces")


@pytest.mark.parametrize("transposed", [False, True])
def test_kernel_larger_than_the_map_is_cropped_exactly(transposed):
    """Taps that only meet padding are cut; output and gradients unchanged."""
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, 13, 3, dtype=torch.float64, requires_grad=True)
    padding = (5, 7, 1, 1)
    plain = F.conv2d(F.pad(x, (1, 1, 5, 7)), weight, groups=3)
    out = depthwise_conv2d(x, weight, None, padding, transposed=transposed)
    torch.testing.assert_close(out, plain)
    want = torch.autograd.grad(plain.sum(), [x, weight])
    got = torch.autograd.grad(out.sum(), [x, weight])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
