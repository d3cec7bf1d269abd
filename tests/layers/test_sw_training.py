"""The SW operator's training form: the fused strips path (``conv_bn_sum``) against the
reference strategy, including what a training step leaves in the BatchNorms."""

from __future__ import annotations

import copy

import pytest
import torch
from testing_utils import randomize_batchnorm

from shiftwise.layers import ShiftWiseConv2d, shiftwise_conv
from shiftwise.ops.conv_bn_sum import RECOMPUTE_FROM


@pytest.mark.parametrize(
    "shape",
    [(4, 9, 11), (2, 128, 130)],  # op by op, and the custom op (from RECOMPUTE_FROM elements)
)
def test_training_steps_leave_the_reference_running_statistics(shape):
    batch, height, width = shape
    torch.manual_seed(0)
    op = ShiftWiseConv2d(12, 13, 3, ghost_ratio=0.25, channel_order="official").double().train()
    randomize_batchnorm(op)
    strips, reference = op.with_strategy("strips"), op.with_strategy("reference")
    assert strips.strategy == "strips"
    assert (batch * strips.n_rep * height * width >= RECOMPUTE_FROM) == (height > 100)
    for step in range(3):
        x = torch.randn(batch, 12, height, width, dtype=torch.float64, requires_grad=True)
        outputs = []
        for model in (strips, reference):
            out = model(x)
            outputs.append((out, torch.autograd.grad(out.square().sum(), [x, *model.parameters()])))
        (out, grads), (expected, expected_grads) = outputs
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12, msg=f"step {step}")
        for grad, expected_grad in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(grad, expected_grad, rtol=1e-11, atol=1e-11)
        for (name, buffer), expected_buffer in zip(
            strips.named_buffers(), reference.buffers(), strict=True
        ):
            torch.testing.assert_close(buffer, expected_buffer, rtol=1e-12, atol=1e-12, msg=name)


def test_bf16_autocast_training_runs_the_fused_op_and_returns_bf16(monkeypatch):
    """Under autocast the training form still runs ``conv_bn_sum`` (its autocast kernel), so
    AMP keeps the memory saving of the fused path."""
    torch.manual_seed(1)
    op = ShiftWiseConv2d(8, 9, 3).train()
    expected = copy.deepcopy(op)
    x = torch.randn(2, 8, 7, 7)
    calls = []
    fused = shiftwise_conv.conv_bn_sum
    monkeypatch.setattr(
        shiftwise_conv, "conv_bn_sum", lambda *a, **k: calls.append(1) or fused(*a, **k)
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = op(x)
        reference = expected.with_strategy("reference")(x)
    assert calls == [1]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference.float(), rtol=0.05, atol=0.05)
    assert op.bn_h.num_batches_tracked.item() == 1
