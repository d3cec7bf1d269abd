"""``shiftwise::shift_add`` as a torch.library custom op: registration, autograd, compile."""

from __future__ import annotations

import torch

from shiftwise.ops import shift_add, shift_add_reference
from shiftwise.ops.custom_ops import shift_add_adjoint_op, shift_add_op


def small_case(dtype=torch.float64):
    generator = torch.Generator().manual_seed(3)
    y = torch.randn(2, 4, 5, 6, dtype=dtype, generator=generator)
    index = torch.tensor([[0, 2, 1, 3], [1, 1, 0, 2], [3, 0, 0, 1]])
    offsets = torch.tensor([[1, -2], [0, 3], [1, -2], [-1, 1]])
    return y, index, offsets


def test_opcheck_both_ops():
    """Schema, fake kernel, autograd registration and aot dispatch agree with the eager op."""
    y, index, offsets = small_case()
    torch.library.opcheck(shift_add_op, (y.requires_grad_(), index, offsets, 4, 5))
    grad = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(shift_add_adjoint_op, (grad, index, offsets, 4, 5, 6))


def test_gradcheck_and_gradgradcheck():
    y, index, offsets = small_case()
    y.requires_grad_()

    def op(t):
        return shift_add(t, index, offsets, (4, 5))

    assert torch.autograd.gradcheck(op, (y,))
    assert torch.autograd.gradgradcheck(op, (y,))


def test_dtype_and_result_match_reference_in_float32():
    y, index, offsets = small_case(torch.float32)
    out = shift_add(y, index, offsets, (4, 5))
    assert out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, shift_add_reference(y, index, offsets, (4, 5)))


def test_compiles_without_graph_breaks():
    """fullgraph=True fails on any graph break; forward and backward equal eager."""
    y, index, offsets = small_case(torch.float32)
    weight = torch.randn(4, 1, 3, 3, requires_grad=True)

    def net(x, w):
        pieces = torch.nn.functional.conv2d(x, w, padding=1, groups=4)
        return shift_add(pieces, index, offsets, (5, 6)).relu().sum()

    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    loss = compiled(y, weight)
    (grad,) = torch.autograd.grad(loss, weight)
    expected_loss = net(y, weight)
    (expected_grad,) = torch.autograd.grad(expected_loss, weight)
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(grad, expected_grad)
