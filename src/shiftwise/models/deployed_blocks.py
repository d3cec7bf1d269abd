"""Inference forms of the residual blocks, each its own module (what ``fuse()`` returns).

A deployed block holds its operator's inference module and the block's weights with every
eval-mode constant folded in (layer scale, the BN after the MLP, GRN's shift). It keeps the
residual stream as channels-last tokens (:mod:`shiftwise.models.tokens`): the depthwise conv's
output feeds the MLP's GEMMs without permute copies, and ``fc2`` adds the residual.

The per-sample factors of the ShiftWise block (the SE gate, GRN's response) are applied as
broadcast multiplications of the tokens, so both projections are plain ``addmm`` over all
``B * H * W`` tokens: folded into per-sample weights they needed a batched GEMM (``baddbmm``),
which torch.profiler showed as half of deploy time and about 1.5x slower than ``addmm`` at the
stage-1 and stage-2 shapes.
"""

from __future__ import annotations

import copy
from abc import ABCMeta, abstractmethod

import torch
from torch import nn

from shiftwise.layers.conv_bn import bn_scale_shift
from shiftwise.layers.interface import DepthwiseOperator, LargeKernelOperator
from shiftwise.models.tokens import (
    channel_tokens,
    grn_response_scale,
    linear_tokens,
    tokens_to_channels_first,
)

# Leaf of torch.fx symbolic tracing: it reshapes by the tokens' shape.
torch.fx.wrap("linear_tokens")

__all__ = [
    "DeployableBlock",
    "DeployedConvNeXtBlock",
    "DeployedShiftWiseBlock",
    "deployed_operator",
]


class DeployableBlock(nn.Module, metaclass=ABCMeta):
    """A training block that builds its inference form (timm's ``fuse()`` habit)."""

    @abstractmethod
    def fuse(self, form: str = "auto") -> nn.Module:
        """A new module equal to this block in eval mode, its operator in deploy form ``form``
        (:data:`~shiftwise.layers.interface.DEPLOY_FORMS`)."""


def deployed_operator(operator: nn.Module, form: str = "auto") -> nn.Module:
    """``operator``'s inference module (in ``form`` if it has that form, else ``"auto"``) if it
    is a large-kernel operator, else a copy of it."""
    if isinstance(operator, LargeKernelOperator):
        return operator.preferred_inference_module(form)
    return copy.deepcopy(operator)


def _linear_with_bias(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0]).to(weight)
    linear.weight.copy_(weight)
    linear.bias.copy_(bias)
    return linear


class DeployedConvNeXtBlock(nn.Module):
    """Eval-only ConvNeXt block: ``x + fc2(GELU(fc1(LN(conv_dw(x)))))``, ``gamma`` in ``fc2``.

    Returns a channels-last ``[B, C, H, W]`` tensor.
    """

    def __init__(self, conv_dw: nn.Module, norm: nn.LayerNorm, fc1: nn.Linear, fc2: nn.Linear):
        super().__init__()
        self.conv_dw = conv_dw
        self.norm = norm
        self.fc1 = fc1
        self.act = nn.GELU()
        self.fc2 = fc2

    @classmethod
    @torch.no_grad()
    def from_block(cls, block: nn.Module, form: str = "auto") -> DeployedConvNeXtBlock:
        """Fold ``block.gamma`` into ``fc2``; the operator into deploy form ``form``."""
        gamma = block.gamma
        fc2 = _linear_with_bias(block.fc2.weight * gamma[:, None], block.fc2.bias * gamma)
        norm, fc1 = copy.deepcopy(block.norm), copy.deepcopy(block.fc1)
        return cls(deployed_operator(block.conv_dw, form), norm, fc1, fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]`` (channels-last)."""
        y = self.conv_dw(x)
        height, width = y.shape[-2], y.shape[-1]
        hidden = self.act(self.fc1(self.norm(channel_tokens(y))))
        out = linear_tokens(hidden, self.fc2.weight, self.fc2.bias, residual=channel_tokens(x))
        return tokens_to_channels_first(out, height, width)


class DeployedShiftWiseBlock(nn.Module):
    """Eval-only ShiftWise block, ``[B, C, H, W] -> [B, C, H, W]`` (channels-last)::

        c = conv_dw(x);  z = a * c + t                    (``norm``; a = 1, t = 0 when the
                                                           operator absorbed it)
        g = SE gate of mean_HW(z);  h = GELU(fc1(g * z))
        x + fc2(r * h)                                    (r: GRN's per-sample response)

    ``fc2`` carries ``norm2``, ``gamma`` and GRN's ``beta`` (``fc2(r h + beta) = fc2(r h) +
    W beta``).
    """

    def __init__(
        self,
        conv_dw: nn.Module,
        norm_scale: torch.Tensor,
        norm_shift: torch.Tensor,
        se: nn.Module,
        fc1: nn.Linear,
        grn_gamma: torch.Tensor,
        fc2: nn.Linear,
    ) -> None:
        super().__init__()
        self.conv_dw = conv_dw
        self.norm_scale = nn.Parameter(norm_scale.detach().clone())
        self.norm_shift = nn.Parameter(norm_shift.detach().clone())
        self.se = se
        self.fc1 = fc1
        self.act = nn.GELU()
        self.grn_gamma = nn.Parameter(grn_gamma.detach().clone())
        self.fc2 = fc2

    @classmethod
    @torch.no_grad()
    def from_block(cls, block: nn.Module, form: str = "auto") -> DeployedShiftWiseBlock:
        """Fold what the eval-mode ``block`` allows into the weights of a new deployed block.

        * ``norm2``, ``gamma`` and GRN's ``beta`` into ``fc2`` (which gains a bias):
          ``gamma * BN2(W (r h + beta)) = (s * W)(r h) + s * W beta + gamma * bn_shift``,
          ``s = gamma * bn_scale``;
        * ``norm`` into the operator when it can absorb an output affine
          (:meth:`~shiftwise.layers.interface.DepthwiseOperator.absorb_output_affine`, e.g. SW
          deployed as strips), and then the operator's output order into the layers that read
          it (the SE's ``down`` columns and ``up`` rows, ``fc1``'s columns;
          :meth:`~shiftwise.layers.interface.DepthwiseOperator.release_output_order`).
        """
        operator = deployed_operator(block.conv_dw, form)
        se, fc1 = copy.deepcopy(block.se), copy.deepcopy(block.fc1)
        scale, shift = bn_scale_shift(block.norm)
        if isinstance(operator, DepthwiseOperator) and operator.absorb_output_affine(scale, shift):
            scale, shift = torch.ones_like(scale), torch.zeros_like(shift)
            order = operator.release_output_order()  # new input channel order[i] was channel i
            if order is not None:
                inverse = torch.argsort(order)
                se.down.weight.copy_(se.down.weight[:, inverse])
                se.up.weight.copy_(se.up.weight[inverse])
                se.up.bias.copy_(se.up.bias[inverse])
                fc1.weight.copy_(fc1.weight[:, inverse])
        bn_scale, bn_shift = bn_scale_shift(block.norm2)
        out_scale = block.gamma * bn_scale
        weight = block.fc2.weight * out_scale[:, None]
        bias = weight @ block.grn.beta.flatten() + block.gamma * bn_shift
        grn_gamma = block.grn.gamma.flatten()
        return cls(operator, scale, shift, se, fc1, grn_gamma, _linear_with_bias(weight, bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]`` (channels-last)."""
        c = self.conv_dw(x)
        height, width = c.shape[-2], c.shape[-1]
        tokens = channel_tokens(c)
        gate = self.se.gate(tokens.mean(dim=1) * self.norm_scale + self.norm_shift)
        hidden = linear_tokens(
            tokens, self.fc1.weight, self.fc1.bias, gate * self.norm_scale, gate * self.norm_shift
        )
        hidden = self.act(hidden)
        hidden = hidden * grn_response_scale(hidden, self.grn_gamma).unsqueeze(1)
        out = linear_tokens(hidden, self.fc2.weight, self.fc2.bias, residual=channel_tokens(x))
        return tokens_to_channels_first(out, height, width)
