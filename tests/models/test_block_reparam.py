"""Block re-parameterisation: folded deploy forwards equal the eval forward exactly."""

from __future__ import annotations

import pytest
import torch
from testing_utils import randomize_batchnorm

from shiftwise.layers import ShiftWiseConv2d, SLaKConv2d
from shiftwise.models.blocks import ConvNeXtBlock, ShiftWiseBlock
from shiftwise.models.tokens import channel_tokens, linear_tokens, tokens_to_channels_first


def _randomized_shiftwise_block(
    dim: int, channel_order: str = "official", strategy: str = "auto"
) -> ShiftWiseBlock:
    torch.manual_seed(0)
    operator = ShiftWiseConv2d(dim, 9, 3, channel_order=channel_order, strategy=strategy)
    block = ShiftWiseBlock(dim, operator, layer_scale_init=0.5).double()
    randomize_batchnorm(block)
    with torch.no_grad():
        block.gamma.uniform_(-1, 1)
        block.grn.gamma.uniform_(-1, 1)
        block.grn.beta.uniform_(-1, 1)
    return block.eval()


@pytest.mark.parametrize("size", [(8, 8), (3, 5)])
def test_shiftwise_block_deploy_folds_norms_se_and_grn_exactly(size):
    """Covers both places of the per-sample scales: 64 tokens scale weights, 15 tokens inputs."""
    block = _randomized_shiftwise_block(16)
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        block.reparameterize()
        block.reparameterize()
        assert block.norm2 is None and block.gamma is None and block.fc2.bias is not None
        assert block.norm is None and block.conv_dw.channel_order == "input"
        torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
        channels_last = block(x.contiguous(memory_format=torch.channels_last))
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(channels_last, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("channel_order", "strategy"), [("input", "strips"), ("official", "fused")]
)
def test_shiftwise_block_deploy_is_exact_for_other_operator_forms(channel_order, strategy):
    """Input-order strips fold ``norm`` too; the pieces form keeps ``norm`` and its order."""
    block = _randomized_shiftwise_block(16, channel_order, strategy)
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        block.reparameterize()
        assert (block.norm is None) == (strategy == "strips")
        assert block.conv_dw.channel_order == channel_order
        torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


def test_convnext_block_deploy_folds_layer_scale_exactly():
    torch.manual_seed(1)
    block = ConvNeXtBlock(12, SLaKConv2d(12, 7, 3, 3), layer_scale_init=0.5).double()
    randomize_batchnorm(block)
    block.eval()
    x = torch.randn(2, 12, 6, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = block(x)
        block.reparameterize()
        block.reparameterize()
        assert block.gamma is None
        out = block(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_tokens", [3, 40])
@pytest.mark.parametrize("with_scale", [False, True])
@pytest.mark.parametrize("shift_shape", [None, (6,), (2, 6)])
def test_linear_tokens_matches_the_plain_formula(n_tokens, with_scale, shift_shape):
    """3 tokens fold the affine into the tokens, 40 into the weights and bias."""
    generator = torch.Generator().manual_seed(n_tokens)
    tokens = torch.randn(2, n_tokens, 6, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    scale = torch.randn(2, 6, generator=generator, dtype=torch.float64) if with_scale else None
    shift = None
    if shift_shape is not None:
        shift = torch.randn(shift_shape, generator=generator, dtype=torch.float64)
    residual = torch.randn(2, n_tokens, 5, generator=generator, dtype=torch.float64)
    inputs = tokens
    if scale is not None:
        inputs = inputs * scale[:, None, :]
    if shift is not None:
        inputs = inputs + shift.reshape(-1, 1, 6)
    plain = inputs @ weight.t() + bias
    torch.testing.assert_close(linear_tokens(tokens, weight, bias, scale, shift), plain)
    torch.testing.assert_close(
        linear_tokens(tokens, weight, bias, scale, shift, residual), residual + plain
    )


def test_token_views_round_trip_without_copy_for_channels_last():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    tokens = channel_tokens(x)
    assert tokens.shape == (2, 20, 3) and tokens.data_ptr() == x.data_ptr()
    torch.testing.assert_close(tokens_to_channels_first(tokens, 4, 5), x, atol=0, rtol=0)
    torch.testing.assert_close(channel_tokens(x.contiguous()), tokens, atol=0, rtol=0)
