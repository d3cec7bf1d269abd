"""The fast shift-add kernels (torch, Triton interpreter) against the reference, both directions."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftwise.layers import ShiftWiseConv2d
from shiftwise.ops.shift_add import shift_add_reference
from shiftwise.ops.shift_add_torch import shift_add_adjoint_torch, shift_add_torch
from shiftwise.ops.shift_add_triton import triton_available
from shiftwise.ops.sw_geometry import term_offsets


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
    tables = module.tables
    indices = (tables.horizontal, tables.vertical, tables.identity)
    for index, offsets in zip(indices, term_offsets(module.geometry, 4), strict=True):
        torch.testing.assert_close(
            shift_add_torch(y, index, offsets, (9, 7)),
            shift_add_reference(y, index, offsets, (9, 7)),
        )


TRITON_CHECK = """
import torch
from shiftwise.ops.shift_add import shift_add_reference
from shiftwise.ops.shift_add_triton import shift_add_adjoint_triton, shift_add_triton

device = "cuda" if torch.cuda.is_available() else "cpu"
generator = torch.Generator().manual_seed(0)
# bfloat16 (autocast's dtype): accumulated in float32, rounded once (2^-9 of sums below ~16)
for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 4e-2)):
    for _ in range(6):
        pieces, channels, terms = (int(v) for v in torch.randint(1, 6, (3,), generator=generator))
        y_size = tuple(int(v) for v in torch.randint(1, 9, (2,), generator=generator))
        out_size = tuple(int(v) for v in torch.randint(1, 9, (2,), generator=generator))
        y = torch.randn(2, pieces, *y_size, dtype=torch.float64, generator=generator).to(dtype)
        index = torch.randint(0, pieces, (channels, terms), generator=generator)
        offsets = torch.randint(-4, 6, (terms, 2), generator=generator)
        y64 = y.double().requires_grad_()
        expected = shift_add_reference(y64, index, offsets, out_size)
        grad = torch.randn(expected.shape, dtype=torch.float64, generator=generator).to(dtype)
        (expected_grad,) = torch.autograd.grad(expected, y64, grad.double())
        args = (index.to(device), offsets.to(device))
        out = shift_add_triton(y.to(device), *args, out_size).cpu()
        grad_y = shift_add_adjoint_triton(grad.to(device), *args, tuple(y.shape)).cpu()
        assert out.dtype == dtype and grad_y.dtype == dtype
        assert (out.double() - expected).abs().max() <= tolerance, "forward"
        assert (grad_y.double() - expected_grad).abs().max() <= tolerance, "adjoint"
print("triton ok")
"""


def test_triton_kernels_equal_reference():
    """Triton's interpreter must be switched on before Triton is first imported, which other
    tests (torch.compile) may already have done in this process: run in a fresh one."""
    if not triton_available():
        pytest.skip("triton is not installed (optional extra 'triton')")
    env = {**os.environ}
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "triton ok" in result.stdout


def test_channels_last_pieces_give_the_same_shift_add():
    """A channels-last ``y`` (as a channels-last conv produces) is gathered row-major too."""
    generator = torch.Generator().manual_seed(3)
    y = torch.randn(2, 12, 9, 10, generator=generator, dtype=torch.float64)
    index = torch.randint(0, 12, (4, 5), generator=generator)
    offsets = torch.randint(-2, 4, (5, 2), generator=generator)
    expected = shift_add_torch(y, index, offsets, (7, 8))
    got = shift_add_torch(y.contiguous(memory_format=torch.channels_last), index, offsets, (7, 8))
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
