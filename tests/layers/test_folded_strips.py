"""Deployed ShiftWiseConv2d: the strips path folded into two strip convs and one bias."""

from __future__ import annotations

import pytest
import torch
from testing_utils import randomize_batchnorm

from shiftwise.layers import ShiftWiseConv2d
from shiftwise.layers.sw_strategies import FoldedStrips, use_strategy


@pytest.mark.parametrize(
    ("kernel", "small", "height", "width", "keep_order"),
    [(13, 3, 9, 7, False), (10, 5, 6, 11, True), (51, 3, 14, 14, False), (7, 1, 1, 5, False)],
)
def test_folded_strips_equal_eval_output_in_every_strategy(
    kernel, small, height, width, keep_order
):
    torch.manual_seed(0)
    op = ShiftWiseConv2d(12, kernel, small, keep_channel_order=keep_order).double()
    randomize_batchnorm(op)
    op.eval()
    x = torch.randn(2, 12, height, width, dtype=torch.float64)
    with torch.no_grad():
        expected = op(x)
        op.reparameterize()
        assert isinstance(op.folded, FoldedStrips)
        for strategy in ("auto", "strips", "fused", "reference"):
            with use_strategy(op, strategy):
                torch.testing.assert_close(op(x), expected, rtol=1e-12, atol=1e-12)


def test_folded_strips_follow_the_deployed_state_dict():
    torch.manual_seed(0)
    source = ShiftWiseConv2d(8, 9, 3).double()
    randomize_batchnorm(source)
    source.eval().reparameterize()
    target = ShiftWiseConv2d(8, 9, 3).double().eval()
    target.reparameterize()
    target.load_state_dict(source.state_dict())
    x = torch.randn(1, 8, 10, 10, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=1e-12, atol=1e-12)
