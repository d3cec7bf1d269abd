"""``shiftwise::gelu_grn_linear``: equal to its reference forward and backward, saves one input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from testing_utils import randomize_batchnorm
from torch.autograd.graph import saved_tensors_hooks
from torch.utils.flop_counter import FlopCounterMode

from shiftwise.layers import ShiftWiseConv2d
from shiftwise.models.blocks import ShiftWiseBlock
from shiftwise.ops.grn_mlp import gelu_grn_linear, gelu_grn_linear_op, gelu_grn_linear_reference


def _inputs(batch=2, height=3, width=4, hidden=8, out=5, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, dtype=dtype, generator=generator).requires_grad_()

    return (
        rand(batch, height, width, hidden),
        rand(1, 1, 1, hidden),
        rand(1, 1, 1, hidden),
        rand(out, hidden),
    )


def _grads(fn, args, weights):
    out = fn(*args)
    return out, torch.autograd.grad((out * weights).sum(), args)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    height=st.integers(1, 5),
    width=st.integers(1, 5),
    hidden=st.integers(1, 12),
    out=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_forward_and_backward_equal_the_reference(batch, height, width, hidden, out, seed):
    args = _inputs(batch, height, width, hidden, out, seed)
    weights = torch.randn(batch, height, width, out, dtype=torch.float64)
    got, got_grads = _grads(gelu_grn_linear, args, weights)
    expected, expected_grads = _grads(gelu_grn_linear_reference, args, weights)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for name, grad, expected_grad in zip(
        ("hidden", "gamma", "beta", "weight"), got_grads, expected_grads, strict=True
    ):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-11, atol=1e-11, msg=name)


def test_gradcheck_and_opcheck():
    args = _inputs()
    assert torch.autograd.gradcheck(gelu_grn_linear, args)
    torch.library.opcheck(gelu_grn_linear_op, args)


def test_all_zero_channel_gets_the_reference_gradient():
    """GELU(-1e4) is exactly 0: that channel's norm is 0 and its norm gradient must be 0 (the
    ``vector_norm`` convention), not NaN."""
    hidden, gamma, beta, weight = _inputs()
    with torch.no_grad():
        hidden[0, :, :, 3] = -1e4
    args = (hidden, gamma, beta, weight)
    weights = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    _, got = _grads(gelu_grn_linear, args, weights)
    _, expected = _grads(gelu_grn_linear_reference, args, weights)
    for grad, expected_grad in zip(got, expected, strict=True):
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)


def test_float32_matches_float64_reference():
    args64 = _inputs(2, 8, 8, 64, 16)
    args32 = tuple(a.detach().float().requires_grad_() for a in args64)
    weights = torch.randn(2, 8, 8, 16, dtype=torch.float64)
    got, got_grads = _grads(gelu_grn_linear, args32, weights.float())
    expected, expected_grads = _grads(gelu_grn_linear_reference, args64, weights)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
    for grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-3, atol=1e-3)


def _block() -> ShiftWiseBlock:
    torch.manual_seed(0)
    operator = ShiftWiseConv2d(16, 9, 3, channel_order="official")
    block = ShiftWiseBlock(16, operator, layer_scale_init=0.5).double()
    randomize_batchnorm(block)
    with torch.no_grad():
        block.grn.gamma.uniform_(-1, 1)
        block.grn.beta.uniform_(-1, 1)
    return block.train()


def _plain_forward(block: ShiftWiseBlock, x: torch.Tensor) -> torch.Tensor:
    """The official block's training forward, module by module (GRN by ``vector_norm``)."""
    y = block.se(block.norm(block.conv_dw(x))).permute(0, 2, 3, 1)
    y = block.fc2(block.grn(block.act(block.fc1(y)))).permute(0, 3, 1, 2)
    return x + block.norm2(y) * block.gamma.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("size", [(6, 7), (1, 1)])
def test_block_training_forward_equals_the_module_by_module_block(size):
    block = _block()
    x = torch.randn(2, 16, *size, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 16, *size, dtype=torch.float64)
    params = [x, *block.parameters()]
    results = []
    for forward in (block, lambda x: _plain_forward(block, x)):
        out = forward(x)
        results.append((out, torch.autograd.grad((out * weights).sum(), params)))
    (out, grads), (expected, expected_grads) = results
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-13)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-11, atol=1e-11)


def test_block_keeps_one_hidden_activation_for_the_backward():
    """Of the ``4C``-channel activations (fc1's output, GELU's, GRN's) only fc1's is saved."""
    block = _block()
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64, requires_grad=True)
    storages = set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() == 4 and tensor.shape[-1] == 64 and tensor.shape[1] > 1:
            storages.add(tensor.untyped_storage().data_ptr())
        return tensor

    with saved_tensors_hooks(pack, lambda tensor: tensor):
        block(x).sum().backward()
    assert len(storages) == 1


def test_flop_counter_counts_the_projection():
    args = _inputs(2, 3, 4, 8, 5)
    counts = []
    for fn in (gelu_grn_linear, gelu_grn_linear_reference):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            fn(*args)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == 2 * (2 * 3 * 4) * 8 * 5
