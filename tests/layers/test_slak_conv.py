"""SLaKConv2d and RepLKConv2d: branch shapes, exact merge, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from testing_utils import randomize_batchnorm

from shiftwise.layers import RepLKConv2d, SLaKConv2d

odd = st.integers(0, 8).map(lambda n: 2 * n + 1)


def check_equivalence(op, x):
    out = op(x)
    weight, bias = op.equivalent_kernel()
    dense = F.conv2d(x, weight, bias, padding=op.kernel_size // 2, groups=x.shape[1])
    torch.testing.assert_close(dense, out, atol=1e-10, rtol=0)
    for form in ("dense", "strips"):
        torch.testing.assert_close(op.inference_module(form)(x), out, atol=1e-10, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    kernel=odd,
    short=odd,
    small=st.one_of(st.none(), odd),
    bn=st.booleans(),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
)
def test_slak_eval_equals_equivalent_kernel(kernel, short, small, bn, height, width):
    short = min(short, kernel)
    small = None if small is None else min(small, kernel)
    op = SLaKConv2d(3, kernel, short, small, bn=bn).double().eval()
    randomize_batchnorm(op)
    check_equivalence(op, torch.randn(2, 3, height, width, dtype=torch.float64))


@settings(max_examples=20, deadline=None)
@given(kernel=odd, small=st.one_of(st.none(), odd), height=st.integers(1, 10))
def test_large_kernel_eval_equals_equivalent_kernel(kernel, small, height):
    small = None if small is None else min(small, kernel)
    op = RepLKConv2d(3, kernel, small).double().eval()
    randomize_batchnorm(op)
    check_equivalence(op, torch.randn(2, 3, height, 7, dtype=torch.float64))


def test_slak_branches_have_official_shapes():
    op = SLaKConv2d(124, 51, 5, 5)
    assert op.tall.conv.weight.shape == (124, 1, 51, 5)
    assert op.wide.conv.weight.shape == (124, 1, 5, 51)
    assert op.small.conv.weight.shape == (124, 1, 5, 5)
    assert SLaKConv2d(8, 5, 5, 5).small_kernel is None  # small == big: no small branch


def test_reparameterize_float32_paper_size():
    torch.manual_seed(0)
    op = SLaKConv2d(16, 51, 5, 5).eval()
    randomize_batchnorm(op)
    x = torch.randn(2, 16, 28, 36).to(memory_format=torch.channels_last)
    out = op(x)
    assert (op.inference_module()(x) - out).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("factory", "error", "name"),
    [
        (lambda: SLaKConv2d(0), ValueError, "channels"),
        (lambda: SLaKConv2d(4, 50), ValueError, "kernel_size"),
        (lambda: SLaKConv2d(4, 13, 15), ValueError, "short_side"),
        (lambda: SLaKConv2d(4, 13, 4), ValueError, "short_side"),
        (lambda: SLaKConv2d(4, 13, 5, 2), ValueError, "small_kernel"),
        (lambda: RepLKConv2d(4, -3), ValueError, "kernel_size"),
        (lambda: RepLKConv2d(4, 31, 6), ValueError, "small_kernel"),
        (lambda: SLaKConv2d(8, 5, 5, 7), ValueError, "small_kernel"),
        (lambda: RepLKConv2d(4, 5, 7), ValueError, "small_kernel"),
    ],
)
def test_bad_arguments(factory, error, name):
    with pytest.raises(error, match=name):
        factory()


def test_bad_input():
    with pytest.raises(ValueError, match="channels"):
        SLaKConv2d(4, 7)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(TypeError, match="dtype"):
        RepLKConv2d(4, 7)(torch.zeros(1, 4, 5, 5, dtype=torch.int32))
