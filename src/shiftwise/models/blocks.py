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

from shiftwise.layers.conv_bn import bn_scale_shift
from shiftwise.layers.interface import LargeKernelOperator
from shiftwise.layers.shiftwise_conv import ShiftWiseConv2d
from shiftwise.models.tokens import channel_tokens, linear_tokens, tokens_to_channels_first
from shiftwise.ops.grn_mlp import gelu_grn_linear

# Leaf of torch.fx symbolic tracing: it picks where to fold the affine from the token count.
torch.fx.wrap("linear_tokens")

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

    def response_scale(self, tokens: torch.Tensor) -> torch.Tensor:
        """The per-sample factor ``gamma * Nx + 1``, ``[B, C]``, of tokens ``[B, N, C]``.

        ``forward(x) == response_scale(x.flatten(1, 2))[:, None, None] * x + beta``. The norm
        is taken as ``sqrt(sum(x^2))``, several times faster on CPU than ``vector_norm`` over
        the token dimension; its gradient is undefined for an all-zero channel, so this is
        meant for the deployed (inference) block.
        """
        gx = tokens.square().sum(dim=1).sqrt()
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma.flatten() * nx + 1


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


class ConvNeXtBlock(nn.Module):
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
        if self.gamma is None:
            return self._deployed_forward(x)
        y = self.conv_dw(x).permute(0, 2, 3, 1)
        y = self.fc2(self.act(self.fc1(self.norm(y))))
        y = (y * self.gamma).permute(0, 3, 1, 2)
        return x + self.drop_path(y)

    def _deployed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eval forward on channels-last tokens, ``fc2`` (``gamma`` folded in) adding the residual.

        Returns a channels-last ``[B, C, H, W]`` tensor.
        """
        y = self.conv_dw(x)
        height, width = y.shape[-2], y.shape[-1]
        hidden = self.act(self.fc1(self.norm(channel_tokens(y))))
        out = linear_tokens(hidden, self.fc2.weight, self.fc2.bias, residual=channel_tokens(x))
        return tokens_to_channels_first(out, height, width)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold ``gamma`` into ``fc2`` in place (``gamma`` becomes ``None``).

        The deployed block then runs :meth:`_deployed_forward`. Drop path is an identity in
        eval mode, so eval output is unchanged; calling it twice is harmless.
        """
        if self.gamma is None:
            return
        self.fc2.weight.mul_(self.gamma[:, None])
        self.fc2.bias.mul_(self.gamma)
        self.gamma = None


class ShiftWiseBlock(nn.Module):
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
        if self.norm2 is None:
            return self._deployed_forward(x)
        y = self.se(self.norm(self.conv_dw(x))).permute(0, 2, 3, 1)
        y = gelu_grn_linear(self.fc1(y), self.grn.gamma, self.grn.beta, self.fc2.weight)
        y = self.norm2(y.permute(0, 3, 1, 2)) * self.gamma.reshape(1, -1, 1, 1)
        return x + self.drop_path(y)

    def _deployed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eval forward with ``norm``, SE and GRN folded into per-sample MLP weights.

        With ``c = conv_dw(x)`` and ``norm`` as ``a * c + t``, the SE gate ``g [B, C]`` and the
        GRN factor ``r [B, 4C]`` only rescale channels, so per sample the MLP is::

            fc1((g * a) * c + g * t)          fc2(r * h + beta)

        and each per-sample affine input is folded into its GEMM (:func:`linear_tokens`,
        on channels-last tokens): no pass over the activations is spent on BN, SE, GRN,
        permute copies or the residual add. Returns a channels-last ``[B, C, H, W]`` tensor.
        """
        c = self.conv_dw(x)
        height, width = c.shape[-2], c.shape[-1]
        tokens = channel_tokens(c)
        if self.norm is None:  # folded into the operator's strips by reparameterize
            gate = self.se.gate(tokens.mean(dim=1))
            hidden = linear_tokens(tokens, self.fc1.weight, self.fc1.bias, gate)
        else:
            scale, shift = bn_scale_shift(self.norm)
            gate = self.se.gate(tokens.mean(dim=1) * scale + shift)
            hidden = linear_tokens(
                tokens, self.fc1.weight, self.fc1.bias, gate * scale, gate * shift
            )
        hidden = self.act(hidden)
        grn_scale, grn_shift = self.grn.response_scale(hidden), self.grn.beta.flatten()
        out = linear_tokens(
            hidden, self.fc2.weight, self.fc2.bias, grn_scale, grn_shift, channel_tokens(x)
        )
        return tokens_to_channels_first(out, height, width)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold what the eval-mode block allows into its weights, in place.

        * ``norm2`` and ``gamma`` into ``fc2`` (which gains a bias): ``gamma * BN2(W z) =
          (s * W) z + t`` with ``s = gamma * bn_scale`` and ``t = gamma * bn_shift``;
        * when the operator is a :class:`~shiftwise.layers.ShiftWiseConv2d` deployed as
          strips: ``norm`` into its strips
          (:meth:`~shiftwise.layers.ShiftWiseConv2d.absorb_output_affine`), and its
          ``[rep, ghost]`` output order into the layers that read it (the SE's ``down``
          columns and ``up`` rows, ``fc1``'s columns;
          :meth:`~shiftwise.layers.ShiftWiseConv2d.release_output_order`): the operator is
          then two depthwise convs over all channels, no channel is split or gathered.

        Afterwards ``norm2`` and ``gamma`` (and ``norm`` when folded) are ``None``. Eval
        output is unchanged; calling it twice is harmless. The deployed block then runs
        :meth:`_deployed_forward` (with ``norm``'s running statistics when it is kept).
        """
        if self.norm2 is None:
            return
        if isinstance(self.conv_dw, LargeKernelOperator):
            self.conv_dw.reparameterize()
        if isinstance(self.conv_dw, ShiftWiseConv2d) and self.conv_dw.deploy_form == "strips":
            self._fold_into_operator(self.conv_dw)
        bn_scale, bn_shift = bn_scale_shift(self.norm2)
        scale, shift = self.gamma * bn_scale, self.gamma * bn_shift
        fc2 = nn.Linear(self.fc2.in_features, self.fc2.out_features).to(self.fc2.weight)
        fc2.weight.copy_(self.fc2.weight * scale[:, None])
        fc2.bias.copy_(shift)
        self.fc2 = fc2
        self.norm2 = None
        self.gamma = None

    def _fold_into_operator(self, operator: ShiftWiseConv2d) -> None:
        """``norm`` into the deployed strips, their output order into SE and ``fc1``."""
        operator.absorb_output_affine(*bn_scale_shift(self.norm))
        self.norm = None
        order = operator.release_output_order()  # new input channel order[i] was channel i
        inverse = torch.argsort(order)
        down, up = self.se.down, self.se.up
        down.weight.copy_(down.weight[:, inverse])
        up.weight.copy_(up.weight[inverse])
        up.bias.copy_(up.bias[inverse])
        self.fc1.weight.copy_(self.fc1.weight[:, inverse])
