"""The shift-add reference against a literal loop oracle, forward and backward."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftwise.ops import shift_add, shift_add_reference


def loop_shift_add(y, index, offsets, out_size):
    """out[b, c, h, w] = sum_t y[b, index[c, t], h + a_t, w + b_t], zero outside y."""
    batch, _, y_height, y_width = y.shape
    height, width = out_size
    out = torch.zeros(batch, index.shape[0], height, width, dtype=y.dtype)
    for c in range(index.shape[0]):
        for t in range(index.shape[1]):
            row, col = offsets[t].tolist()
            source = int(index[c, t])
            for h in range(height):
                for w in range(width):
                    if 0 <= h + row < y_height and 0 <= w + col < y_width:
                        out[:, c, h, w] += y[:, source, h + row, w + col]
    return out


def loop_shift_add_adjoint(grad_out, index, offsets, y_shape):
    """Adjoint of the shift-add: scatter the output gradient back onto the pieces."""
    grad = torch.zeros(y_shape, dtype=grad_out.dtype)
    _, _, y_height, y_width = y_shape
    height, width = grad_out.shape[-2:]
    for c in range(index.shape[0]):
        for t in range(index.shape[1]):
            row, col = offsets[t].tolist()
            source = int(index[c, t])
            for h in range(height):
                for w in range(width):
                    if 0 <= h + row < y_height and 0 <= w + col < y_width:
                        grad[:, source, h + row, w + col] += grad_out[:, c, h, w]
    return grad


@st.composite
def shift_add_case(draw):
    pieces = draw(st.integers(1, 5))
    channels = draw(st.integers(1, 4))
    terms = draw(st.integers(1, 4))
    y_height, y_width = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    height, width = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    y = torch.randn(2, pieces, y_height, y_width, dtype=torch.float64, generator=generator)
    index = torch.randint(0, pieces, (channels, terms), generator=generator)
    rows = torch.randint(-height - 1, y_height + 1, (terms,), generator=generator)
    cols = torch.randint(-width - 1, y_width + 1, (terms,), generator=generator)
    return y, index, torch.stack([rows, cols], 1), (height, width)


@settings(max_examples=60, deadline=None)
@given(shift_add_case())
def test_forward_matches_loop_oracle(case):
    y, index, offsets, out_size = case
    expected = loop_shift_add(y, index, offsets, out_size)
    torch.testing.assert_close(shift_add_reference(y, index, offsets, out_size), expected)
    torch.testing.assert_close(shift_add(y, index, offsets, out_size), expected)


@settings(max_examples=30, deadline=None)
@given(shift_add_case())
def test_backward_matches_adjoint_oracle(case):
    y, index, offsets, out_size = case
    y = y.requires_grad_()
    grad_out = torch.randn(y.shape[0], index.shape[0], *out_size, dtype=torch.float64)
    shift_add(y, index, offsets, out_size).backward(grad_out)
    expected = loop_shift_add_adjoint(grad_out, index, offsets, y.shape)
    torch.testing.assert_close(y.grad, expected)


def test_one_pixel_shift_is_detected():
    y = torch.arange(16.0).reshape(1, 1, 4, 4)
    index = torch.zeros(1, 1, dtype=torch.long)
    out = shift_add(y, index, torch.tensor([[0, 1]]), (4, 4))
    assert torch.equal(out[0, 0, :, :3], y[0, 0, :, 1:])
    assert torch.equal(out[0, 0, :, 3], torch.zeros(4))


def test_gradcheck():
    generator = torch.Generator().manual_seed(1)
    y = torch.randn(1, 3, 5, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    index = torch.tensor([[0, 2, 1], [1, 1, 0]])
    offsets = torch.tensor([[1, -2], [0, 3], [-1, 1]])
    assert torch.autograd.gradcheck(lambda t: shift_add(t, index, offsets, (4, 5)), (y,))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"y": torch.zeros(1, 2, 3, 3, dtype=torch.int64)}, TypeError, "y"),
        ({"y": torch.zeros(2, 3, 3)}, ValueError, "y"),
        ({"index": torch.zeros(1, 1)}, TypeError, "index"),
        ({"index": torch.zeros(3, dtype=torch.long)}, ValueError, "index"),
        ({"index": torch.full((1, 1), 5)}, ValueError, "index"),
        ({"offsets": torch.zeros(2, 2, dtype=torch.long)}, ValueError, "offsets"),
        ({"offsets": torch.zeros(1, 2)}, TypeError, "offsets"),
        ({"out_size": (0, 3)}, ValueError, "out_size"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    args = {
        "y": torch.zeros(1, 2, 3, 3),
        "index": torch.zeros(1, 1, dtype=torch.long),
        "offsets": torch.zeros(1, 2, dtype=torch.long),
        "out_size": (3, 3),
    }
    args.update(kwargs)
    with pytest.raises(error, match=message):
        shift_add(**args)
