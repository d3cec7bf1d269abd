"""eq-SLaK: any depthwise kernel equals its k x k pieces shifted and summed."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftwise.ops import decompose_kernel, shift_wise_conv2d


def same_conv(x, weight):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # even kernels: "same" pads a copy
        return F.conv2d(x, weight, padding="same", groups=x.shape[1])


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 13),
    cols=st.integers(1, 13),
    small=st.integers(1, 5),
    height=st.integers(1, 10),
    width=st.integers(1, 10),
    seed=st.integers(0, 2**16),
)
def test_shift_wise_conv_equals_same_conv(rows, cols, small, height, width, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, height, width, dtype=torch.float64, generator=generator)
    weight = torch.randn(3, 1, rows, cols, dtype=torch.float64, generator=generator)
    pieces = decompose_kernel(weight, small)
    assert pieces.weight.shape[1] == -(-rows // small) * -(-cols // small)
    torch.testing.assert_close(
        shift_wise_conv2d(x, pieces), same_conv(x, weight), atol=1e-10, rtol=0
    )
    torch.testing.assert_close(pieces.to_kernel(), weight, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("rows", "cols", "small"), [(51, 5, 3), (5, 51, 3), (51, 51, 5), (50, 6, 3)]
)
def test_paper_sizes(rows, cols, small):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 23, 17, dtype=torch.float64, generator=generator)
    weight = torch.randn(4, 1, rows, cols, dtype=torch.float64, generator=generator)
    out = shift_wise_conv2d(x, decompose_kernel(weight, small))
    assert (out - same_conv(x, weight)).abs().max() < 1e-10


def test_gradients_match_dense_conv():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 9, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(2, 1, 7, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    grad = torch.randn(1, 2, 9, 8, dtype=torch.float64, generator=generator)
    pieces = decompose_kernel(weight, 3)
    got = torch.autograd.grad(shift_wise_conv2d(x, pieces), (x, weight), grad)
    expected = torch.autograd.grad(same_conv(x, weight), (x, weight), grad)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="weight"):
        decompose_kernel(torch.zeros(2, 2, 3, 3), 3)
    with pytest.raises(TypeError, match="weight"):
        decompose_kernel(torch.zeros(2, 1, 3, 3, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="small_kernel"):
        decompose_kernel(torch.zeros(2, 1, 3, 3), 0)
    pieces = decompose_kernel(torch.zeros(2, 1, 5, 5), 3)
    with pytest.raises(ValueError, match="channels"):
        shift_wise_conv2d(torch.zeros(1, 3, 4, 4), pieces)
    with pytest.raises(TypeError, match="dtype"):
        shift_wise_conv2d(torch.zeros(1, 2, 4, 4, dtype=torch.float64), pieces)
