"""The fast shift-add kernels (torch, Triton interpreter) against the reference, both directions."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftwise.layers import ShiftWiseConv2d
from shiftwise.ops.shift_add import shift_add_reference
from shiftwise.ops.shift_add_torch import shift_add_adjoint_torch, shift_add_torch
from shiftwise.ops.shift_add_triton import triton_available


@st.composite
def case(draw, dtype=torch.float64):
    """Random pieces, tables (repeated offsets and pieces included) and output size."""
    pieces, channels, terms = (
        draw(st.integers(1, 6)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 6)),
    )
    y_size = (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    out_size = (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    y = torch.randn(draw(st.integers(1, 3)), pieces, *y_size, dtype=dtype, generator=generator)
    index = torch.randint(0, pieces, (channels, terms), generator=generator)
    # Few distinct offsets so that terms share offsets (the grouped path) and some fall outside.
    distinct = torch.stack(
        [
            torch.randint(-out_size[0] - 1, y_size[0] + 1, (3,), generator=generator),
            torch.randint(-out_size[1] - 1, y_size[1] + 1, (3,), generator=generator),
        ],
        1,
    )
    offsets = distinct[torch.randint(0, 3, (terms,), generator=generator)]
    return y, index, offsets, out_size


def reference_adjoint(grad, index, offsets, y):
    """Adjoint through autograd of the reference."""
    y = y.detach().requires_grad_()
    shift_add_reference(y, index, offsets, tuple(grad.shape[-2:])).backward(grad)
    return y.grad


@settings(max_examples=60, deadline=None)
@given(case())
def test_torch_kernel_forward_and_adjoint_equal_reference(args):
    y, index, offsets, out_size = args
    expected = shift_add_reference(y, index, offsets, out_size)
    torch.testing.assert_close(shift_add_torch(y, index, offsets, out_size), expected)
    grad = torch.randn_like(expected)
    torch.testing.assert_close(
        shift_add_adjoint_torch(grad, index, offsets, tuple(y.shape)),
        reference_adjoint(grad, index, offsets, y),
    )


@settings(max_examples=15, deadline=None)
@given(case(dtype=torch.float32))
def test_torch_kernel_float32_and_non_contiguous_input(args):
    y, index, offsets, out_size = args
    strided = y.transpose(-1, -2).contiguous().transpose(-1, -2)
    expected = shift_add_reference(y, index, offsets, out_size)
    torch.testing.assert_close(shift_add_torch(strided, index, offsets, out_size), expected)


def test_torch_kernel_on_the_official_tables():
    """Stage-4-like SW-T operator (K=13): all three branches of real tables."""
    module = ShiftWiseConv2d(40, 13)
    x = torch.randn(2, module.n_rep, 9, 7, dtype=torch.float64)
    y = torch.nn.functional.conv2d(
        x, module.piece_weight().double(), padding=module.geometry.conv_padding, groups=module.n_rep
    )
    for name in ("horizontal", "vertical", "identity"):
        index, offsets = getattr(module, f"{name}_index"), getattr(module, f"{name}_offsets")
        torch.testing.assert_close(
            shift_add_torch(y, index, offsets, (9, 7)),
            shift_add_reference(y, index, offsets, (9, 7)),
        )


@pytest.fixture(scope="module")
def triton_kernels():
    if not triton_available():
        pytest.skip("triton is not installed (optional extra 'triton')")
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if os.environ["TRITON_INTERPRET"] != "1" and not torch.cuda.is_available():
        pytest.skip("no CUDA device and TRITON_INTERPRET is not 1")
    from shiftwise.ops import shift_add_triton

    return shift_add_triton


@settings(max_examples=8, deadline=None)
@given(args=case())
def test_triton_kernels_equal_reference(triton_kernels, args):
    y, index, offsets, out_size = args
    device = "cuda" if torch.cuda.is_available() else "cpu"
    y_dev, index_dev, offsets_dev = y.to(device), index.to(device), offsets.to(device)
    expected = shift_add_reference(y, index, offsets, out_size)
    out = triton_kernels.shift_add_triton(y_dev, index_dev, offsets_dev, out_size)
    torch.testing.assert_close(out.cpu(), expected)
    grad = torch.randn_like(expected)
    grad_y = triton_kernels.shift_add_adjoint_triton(
        grad.to(device), index_dev, offsets_dev, tuple(y.shape)
    )
    torch.testing.assert_close(grad_y.cpu(), reference_adjoint(grad, index, offsets, y))
