"""Block re-parameterisation: folded deploy forwards equal the eval forward exactly."""

from __future__ import annotations

import pytest
import torch
from testing_utils import randomize_batchnorm

import shiftwise
from shiftwise.layers import ShiftWiseConv2d, SLaKConv2d, StripDepthwiseConv2d
from shiftwise.models.blocks import GRN, ConvNeXtBlock, ShiftWiseBlock
from shiftwise.models.deployed_blocks import DeployedConvNeXtBlock, DeployedShiftWiseBlock
from shiftwise.models.tokens import (
    channel_tokens,
    grn_response_scale,
    linear_tokens,
    tokens_to_channels_first,
)


def _randomized_shiftwise_block(dim: int, channel_order: str = "official") -> ShiftWiseBlock:
    torch.manual_seed(0)
    operator = ShiftWiseConv2d(dim, 9, 3, channel_order=channel_order)
    block = ShiftWiseBlock(dim, operator, layer_scale_init=0.5).double()
    randomize_batchnorm(block)
    with torch.no_grad():
        block.gamma.uniform_(-1, 1)
        block.grn.gamma.uniform_(-1, 1)
        block.grn.beta.uniform_(-1, 1)
    return block.eval()


@pytest.mark.parametrize("size", [(8, 8), (3, 5)])
def test_shiftwise_block_deploy_folds_norms_se_and_grn_exactly(size):
    """Official order, strips: ``norm`` and the operator's output order fold away."""
    block = _randomized_shiftwise_block(16)
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        deployed = block.fuse()
        assert isinstance(deployed, DeployedShiftWiseBlock) and deployed.fc2.bias is not None
        assert isinstance(deployed.conv_dw, StripDepthwiseConv2d) and not deployed.conv_dw.reorders
        assert torch.equal(deployed.norm_scale, torch.ones_like(deployed.norm_scale))
        torch.testing.assert_close(deployed(x), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(block(x), expected, rtol=0, atol=0)  # the block is unchanged
        channels_last = deployed(x.contiguous(memory_format=torch.channels_last))
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(channels_last, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("channel_order", "form"),
    [("input", "strips"), ("official", "pieces"), ("official", "dense"), ("input", "pieces")],
)
def test_shiftwise_block_deploy_is_exact_for_other_operator_forms(channel_order, form):
    """Strips fold ``norm`` too; the other forms keep ``norm`` (as a per-channel affine)."""
    block = _randomized_shiftwise_block(16, channel_order)
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        deployed = shiftwise.reparameterize(torch.nn.Sequential(block), form)[0]
        folded = torch.equal(deployed.norm_scale, torch.ones_like(deployed.norm_scale))
        assert folded == (form == "strips")
        torch.testing.assert_close(deployed(x), expected, rtol=1e-12, atol=1e-12)


def test_convnext_block_deploy_folds_layer_scale_exactly():
    torch.manual_seed(1)
    block = ConvNeXtBlock(12, SLaKConv2d(12, 7, 3, 3), layer_scale_init=0.5).double()
    randomize_batchnorm(block)
    block.eval()
    x = torch.randn(2, 12, 6, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = block(x)
        model = torch.nn.Sequential(block)
        shiftwise.reparameterize(model)
        shiftwise.reparameterize(model)  # nothing left to replace
        assert isinstance(model[0], DeployedConvNeXtBlock) and "gamma" not in model.state_dict()
        out = model(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_tokens", [1, 40])
@pytest.mark.parametrize("with_scale", [False, True])
@pytest.mark.parametrize("with_shift", [False, True])
def test_linear_tokens_matches_the_plain_formula(n_tokens, with_scale, with_shift):
    generator = torch.Generator().manual_seed(n_tokens)
    tokens = torch.randn(2, n_tokens, 6, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    scale = torch.randn(2, 6, generator=generator, dtype=torch.float64) if with_scale else None
    shift = torch.randn(2, 6, generator=generator, dtype=torch.float64) if with_shift else None
    residual = torch.randn(2, n_tokens, 5, generator=generator, dtype=torch.float64)
    inputs = tokens
    if scale is not None:
        inputs = inputs * scale[:, None, :]
    if shift is not None:
        inputs = inputs + shift[:, None, :]
    plain = inputs @ weight.t() + bias
    torch.testing.assert_close(linear_tokens(tokens, weight, bias, scale, shift), plain)
    torch.testing.assert_close(
        linear_tokens(tokens, weight, bias, scale, shift, residual), residual + plain
    )


def test_grn_response_scale_is_the_grn_factor():
    torch.manual_seed(2)
    grn = GRN(6).double()
    with torch.no_grad():
        grn.gamma.uniform_(-1, 1)
        grn.beta.uniform_(-1, 1)
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    factor = grn_response_scale(x.flatten(1, 2), grn.gamma.flatten())
    torch.testing.assert_close(factor[:, None, None] * x + grn.beta, grn(x), rtol=1e-12, atol=1e-12)


def test_token_views_round_trip_without_copy_for_channels_last():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    tokens = channel_tokens(x)
    assert tokens.shape == (2, 20, 3) and tokens.data_ptr() == x.data_ptr()
    torch.testing.assert_close(tokens_to_channels_first(tokens, 4, 5), x, atol=0, rtol=0)
    torch.testing.assert_close(channel_tokens(x.contiguous()), tokens, atol=0, rtol=0)
