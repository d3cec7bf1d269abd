"""Selective recomputation in the SW block: same outputs and gradients, fewer saved tensors."""

from __future__ import annotations

import torch
from testing_utils import randomize_batchnorm
from torch.autograd.graph import saved_tensors_hooks

from shiftwise.layers import ShiftWiseConv2d
from shiftwise.models.blocks import ShiftWiseBlock


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
    """The block's training forward with every activation saved (no recomputation)."""
    y = block.se(block.norm(block.conv_dw(x))).permute(0, 2, 3, 1)
    y = block.fc2(block.grn(block.act(block.fc1(y)))).permute(0, 3, 1, 2)
    return x + block.norm2(y) * block.gamma.reshape(1, -1, 1, 1)


def test_recomputed_mlp_tail_keeps_outputs_and_gradients():
    block = _block()
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 16, 6, 7, dtype=torch.float64)
    results = []
    for forward in (block, lambda x: _plain_forward(block, x)):
        out = forward(x)
        grads = torch.autograd.grad((out * weights).sum(), [x, *block.parameters()])
        results.append((out, grads))
    (out, grads), (expected, expected_grads) = results
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-13, atol=1e-13)


def test_recomputed_mlp_tail_saves_one_hidden_activation():
    """Of the ``4C``-channel activations (fc1's output and those of GELU and GRN) only fc1's
    output is kept for the backward."""
    block = _block()
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64, requires_grad=True)

    def hidden_saved(forward) -> int:
        storages = set()

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            if tensor.dim() == 4 and tensor.shape[-1] == 64:
                storages.add(tensor.untyped_storage().data_ptr())
            return tensor

        with saved_tensors_hooks(pack, lambda tensor: tensor):
            forward(x)
        return len(storages)

    assert hidden_saved(lambda x: _plain_forward(block, x)) > 1  # GELU and GRN keep theirs
    assert hidden_saved(block) == 1
