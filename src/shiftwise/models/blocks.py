"""Building blocks of the networks: norms, DropPath, GRN, SE and the two residual blocks.

* :class:`ConvNeXtBlock` is the SLaK / ConvNeXt block (LayerNorm, MLP, layer scale).
* :class:`ShiftWiseBlock` is the block of the official ShiftwiseConv v2 network (the
  UniRepLKNet block with its dilated branch replaced by the operator): BN, SE, MLP with GRN,
  BN after the MLP, layer scale.

Both take the depthwise token mixer (any ``[B, C, H, W] -> [B, C, H, W]`` module) as an
argument, so that operator and block type are chosen independently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shiftwise.models.deployed_blocks import (
    DeployableBlock,
    DeployedConvNeXtBlock,
    DeployedShiftWiseBlock,
)
from shiftwise.ops.grn_mlp import gelu_grn_linear

__all__ = [
    "GRN",
    "ConvNeXtBlock",
    "DropPath",
    "LayerNorm2d",
    "ShiftWiseBlock",
    "SqueezeExcite",
]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a channels-first ``[B, C, H, W]`` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth: zero whole samples of ``[B, C, H, W]`` with probability ``drop_prob``.

    Kept samples are scaled by ``1 / (1 - drop_prob)`` so the expectation is unchanged.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob: expected a value in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = torch.empty_like(x[:, :1, :1, :1]).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class GRN(nn.Module):
    """Global Response Normalisation (ConvNeXt V2) on channels-last ``[B, H, W, C]`` input.

    ``out = (gamma * Nx + 1) * x + beta`` with ``Nx = ||x||_HW / (mean_C ||x||_HW + 1e-6)``.
    ``gamma`` and ``beta`` have the official shape ``[1, 1, 1, C]`` and start at zero.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return (self.gamma * nx + 1) * x + self.beta


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(up(relu(down(mean_HW(x)))))``, 1x1 convs."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, hidden, 1)
        self.up = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=(2, 3)))[:, :, None, None]

    def gate(self, pooled: torch.Tensor) -> torch.Tensor:
        """The channel gate ``sigmoid(up(relu(down(pooled))))``, ``[B, C] -> [B, C]``."""
        hidden = F.relu(F.linear(pooled, self.down.weight.flatten(1), self.down.bias))
        return torch.sigmoid(F.linear(hidden, self.up.weight.flatten(1), self.up.bias))


class ConvNeXtBlock(DeployableBlock):
    """SLaK / ConvNeXt block, ``[B, C, H, W] -> [B, C, H, W]``::

    x + drop_path(gamma * fc2(GELU(fc1(LN(conv_dw(x))))))   (MLP channels-last, 4C hidden)
    """

    def __init__(
        self,
        dim: int,
        conv_dw: nn.Module,
        mlp_ratio: int = 4,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-6,
    ) -> None:
        super().__init__()
        self.conv_dw = conv_dw
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_dw(x).permute(0, 2, 3, 1)
        y = self.fc2(self.act(self.fc1(self.norm(y))))
        y = (y * self.gamma).permute(0, 3, 1, 2)
        return x + self.drop_path(y)

    def fuse(self, form: str = "auto") -> DeployedConvNeXtBlock:
        """The inference form: ``gamma`` folded into ``fc2``, the operator in form ``form``
        (:class:`~shiftwise.models.deployed_blocks.DeployedConvNeXtBlock`)."""
        return DeployedConvNeXtBlock.from_block(self, form)


class ShiftWiseBlock(DeployableBlock):
    """Block of the official ShiftwiseConv v2 network, ``[B, C, H, W] -> [B, C, H, W]``::

        z = SE(BN(conv_dw(x)))                          (SE with C // 4 hidden units)
        z = BN2(fc2(GRN(GELU(fc1(z)))))                 (MLP channels-last, 4C hidden, fc2 no bias)
        x + drop_path(gamma * z)

    The official operator returns its channels in ``[rep, ghost]`` order and this block (as
    the official one) consumes them in that order; only the residual sees ``x`` unpermuted.
    """

    def __init__(
        self,
        dim: int,
        conv_dw: nn.Module,
        mlp_ratio: int = 4,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-6,
    ) -> None:
        super().__init__()
        hidden = mlp_ratio * dim
        self.conv_dw = conv_dw
        self.norm = nn.BatchNorm2d(dim)
        self.se = SqueezeExcite(dim, dim // 4)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GRN(hidden)
        self.fc2 = nn.Linear(hidden, dim, bias=False)
        self.norm2 = nn.BatchNorm2d(dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.conv_dw(x))).permute(0, 2, 3, 1)
        y = gelu_grn_linear(self.fc1(y), self.grn.gamma, self.grn.beta, self.fc2.weight)
        y = self.norm2(y.permute(0, 3, 1, 2)) * self.gamma.reshape(1, -1, 1, 1)
        return x + self.drop_path(y)

    def fuse(self, form: str = "auto") -> DeployedShiftWiseBlock:
        """The inference form: norms, layer scale and GRN's shift folded, SE and GRN as
        per-sample scales, the operator in form ``form``
        (:class:`~shiftwise.models.deployed_blocks.DeployedShiftWiseBlock`)."""
        return DeployedShiftWiseBlock.from_block(self, form)
