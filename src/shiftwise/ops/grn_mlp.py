"""The SW block's MLP tail ``fc2(GRN(GELU(hidden)))`` as one op that saves only its input.

:func:`gelu_grn_linear_reference` is the specification, written as the official block
computes it (``torch.linalg.vector_norm`` over the spatial dims). :func:`gelu_grn_linear` is
the custom op ``shiftwise::gelu_grn_linear`` with a hand-written backward:

* the forward takes the GRN norm as ``sqrt(sum(x^2))`` over the spatial dims, several times
  faster on CPU than ``vector_norm`` on channels-last maps (forward and backward);
* autograd saves ``hidden`` and the per-sample norms only (one ``4C``-channel activation
  instead of the three of GELU, GRN and the projection); the backward recomputes GELU and
  the GRN output from them (two element-wise passes);
* the gradient of the norm is zero where a channel's norm is zero, as ``vector_norm``'s.

Shapes: ``hidden [B, H, W, D]`` (channels last), ``gamma, beta [1, 1, 1, D]``, ``weight
[C, D]``; output ``[B, H, W, C]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

__all__ = ["GRN_EPS", "gelu_grn_linear", "gelu_grn_linear_reference"]

GRN_EPS = 1e-6


def gelu_grn_linear_reference(
    hidden: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """``GRN(GELU(hidden)) @ weight^T``: ``(gamma * Nx + 1) * x + beta`` with ``x = GELU(hidden)``
    and ``Nx = ||x||_HW / (mean_D ||x||_HW + 1e-6)``."""
    x = F.gelu(hidden)
    gx = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
    nx = gx / (gx.mean(dim=-1, keepdim=True) + GRN_EPS)
    return F.linear((gamma * nx + 1) * x + beta, weight)


def gelu_grn_linear(
    hidden: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """:func:`gelu_grn_linear_reference`, by the custom op (fast, saves ``hidden`` only)."""
    return gelu_grn_linear_op(hidden, gamma, beta, weight)[0]


def _response_factor(gx: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From the norms ``gx [B, 1, 1, D]``: their channel mean ``+ eps`` ``[B, 1, 1, 1]`` and the
    response factor ``gamma * Nx + 1`` ``[B, 1, 1, D]``."""
    denominator = gx.mean(dim=-1, keepdim=True) + GRN_EPS
    return denominator, torch.addcmul(torch.ones_like(gx), gamma, gx / denominator)


@torch.library.custom_op("shiftwise::gelu_grn_linear", mutates_args=())
def gelu_grn_linear_op(
    hidden: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fc2(GRN(GELU(hidden))) [B, H, W, C], GRN norms [B, 1, 1, D])``; the norms are kept
    for the backward."""
    x = F.gelu(hidden)
    gx = x.square().sum(dim=(1, 2), keepdim=True).sqrt()
    _, factor = _response_factor(gx, gamma)
    return F.linear(torch.addcmul(beta, x, factor), weight), gx


@gelu_grn_linear_op.register_fake
def _gelu_grn_linear_fake(
    hidden: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, channels = hidden.shape[0], hidden.shape[-1]
    out = hidden.new_empty(*hidden.shape[:-1], weight.shape[0])
    return out, hidden.new_empty(batch, 1, 1, channels)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs, output[1])
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad: torch.Tensor, grad_norms: torch.Tensor | None):
    """Gradients of ``(hidden, gamma, beta, weight)``; the norms output gets none.

    With ``x = GELU(hidden)``, ``f = gamma * Nx + 1`` and ``y = f * x + beta`` (recomputed
    from the saved norms): the projection's gradients, GRN's backward through ``f`` and the
    norms, then GELU's.
    """
    hidden, gamma, beta, weight, gx = ctx.saved_tensors
    x = F.gelu(hidden)
    denominator, factor = _response_factor(gx, gamma)
    grn = torch.addcmul(beta, x, factor)
    grad_weight = grad.flatten(0, -2).t().mm(grn.flatten(0, -2))
    grad_grn = grad.matmul(weight)
    grad_beta = grad_grn.sum(dim=(0, 1, 2), keepdim=True)
    # d(loss)/d(Nx) per sample and channel: gamma * sum_HW grad_grn * x
    grad_x_dot = (grad_grn * x).sum(dim=(1, 2), keepdim=True)
    grad_gamma = (grad_x_dot * gx / denominator).sum(dim=0, keepdim=True)
    grad_nx = grad_x_dot * gamma
    grad_gx = grad_nx / denominator - (grad_nx * gx).sum(dim=-1, keepdim=True) / (
        denominator.square() * gx.shape[-1]
    )
    # d||x|| / dx = x / ||x||, and 0 for an all-zero channel (as vector_norm's backward)
    norm_factor = torch.where(gx > 0, grad_gx / gx, torch.zeros_like(gx))
    grad_x = torch.addcmul(grad_grn * factor, x, norm_factor)
    grad_hidden = torch.ops.aten.gelu_backward(grad_x, hidden)
    return grad_hidden, grad_gamma, grad_beta, grad_weight


gelu_grn_linear_op.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.shiftwise.gelu_grn_linear)
def _gelu_grn_linear_flops(hidden_shape, gamma_shape, beta_shape, weight_shape, **_) -> int:
    """FLOPs of the projection (``2 * tokens * D * C``), as ``FlopCounterMode`` counts a linear."""
    tokens = hidden_shape[0] * hidden_shape[1] * hidden_shape[2]
    return 2 * tokens * weight_shape[0] * weight_shape[1]
