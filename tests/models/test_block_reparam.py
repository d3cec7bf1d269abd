"""ShiftWiseBlock.reparameterize: norm2 and gamma folded into fc2, eval output unchanged."""

from __future__ import annotations

import torch
from testing_utils import randomize_batchnorm

from shiftwise.layers import ShiftWiseConv2d
from shiftwise.models.blocks import ShiftWiseBlock


def test_block_reparameterize_folds_norm2_and_gamma_exactly():
    torch.manual_seed(0)
    block = ShiftWiseBlock(16, ShiftWiseConv2d(16, 9, 3), layer_scale_init=0.5).double()
    randomize_batchnorm(block)
    with torch.no_grad():
        block.gamma.uniform_(-1, 1)
        block.grn.gamma.uniform_(-1, 1)
    block.eval()
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        block.reparameterize()
        block.reparameterize()
        assert block.norm2 is None and block.gamma is None and block.fc2.bias is not None
        torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
