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

Dtypes: GELU runs in ``hidden``'s dtype; the GRN (its norms, their mean and the response) in
the wider of ``hidden``'s and ``gamma``'s; the projection in ``weight``'s, which is the
output's. Under ``torch.autocast`` (:mod:`shiftwise.ops.autocast`) ``hidden`` and ``weight``
are cast to the autocast dtype (the matrix product, as autocast runs a linear) and ``gamma``
and ``beta`` to float32 (the norm, as autocast runs a norm): bfloat16 in and out, float32
statistics. The backward keeps the same dtypes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from shiftwise.ops.autocast import register_autocast, to_dtype, without_autocast

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
    for the backward. Dtypes: see the module docstring."""
    x = F.gelu(hidden)
    gx = _norms(x, gamma)
    _, factor = _response_factor(gx, gamma)
    return F.linear(torch.addcmul(beta, x, factor).to(weight.dtype), weight), gx


def _grn_dtype(hidden: torch.Tensor, gamma: torch.Tensor) -> torch.dtype:
    """The dtype the GRN runs in: the wider of the activation's and its parameters'."""
    return torch.promote_types(hidden.dtype, gamma.dtype)


def _norms(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``||x||_HW [B, 1, 1, D]`` of ``x = GELU(hidden)``, in the GRN's dtype."""
    return x.to(_grn_dtype(x, gamma)).square().sum(dim=(1, 2), keepdim=True).sqrt()


@gelu_grn_linear_op.register_fake
def _gelu_grn_linear_fake(
    hidden: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, channels = hidden.shape[0], hidden.shape[-1]
    out = weight.new_empty(*hidden.shape[:-1], weight.shape[0])
    return out, hidden.new_empty(batch, 1, 1, channels, dtype=_grn_dtype(hidden, gamma))


def _autocast_inputs(
    dtype: torch.dtype,
    hidden: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    weight: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """The projection's operands in the autocast dtype, the GRN's parameters in float32."""
    return (
        to_dtype(hidden, dtype),
        to_dtype(gamma, torch.float32),
        to_dtype(beta, torch.float32),
        to_dtype(weight, dtype),
    )


register_autocast("shiftwise::gelu_grn_linear", _autocast_inputs)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs, output[1])
    ctx.mark_non_differentiable(output[1])


@without_autocast
def _backward(ctx, grad: torch.Tensor, grad_norms: torch.Tensor | None):
    """Gradients of ``(hidden, gamma, beta, weight)``; the norms output gets none.

    With ``x = GELU(hidden)``, ``f = gamma * Nx + 1`` and ``y = f * x + beta`` (recomputed
    from the saved norms): the projection's gradients (in ``weight``'s dtype), GRN's backward
    through ``f`` and the norms (in the GRN's dtype), then GELU's (in ``hidden``'s). Each
    gradient has its input's dtype.
    """
    hidden, gamma, beta, weight, gx = ctx.saved_tensors
    grad = grad.to(weight.dtype)
    x = F.gelu(hidden)
    denominator, factor = _response_factor(gx, gamma)
    grn = torch.addcmul(beta, x, factor).to(weight.dtype)
    grad_weight = grad.flatten(0, -2).t().mm(grn.flatten(0, -2))
    grad_grn = grad.matmul(weight).to(gx.dtype)
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
    grad_hidden = torch.ops.aten.gelu_backward(grad_x.to(hidden.dtype), hidden)
    return grad_hidden, grad_gamma.to(gamma.dtype), grad_beta.to(beta.dtype), grad_weight


gelu_grn_linear_op.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.shiftwise.gelu_grn_linear)
def _gelu_grn_linear_flops(hidden_shape, gamma_shape, beta_shape, weight_shape, **_) -> int:
    """FLOPs of the projection (``2 * tokens * D * C``), as ``FlopCounterMode`` counts a linear."""
    tokens = hidden_shape[0] * hidden_shape[1] * hidden_shape[2]
    return 2 * tokens * weight_shape[0] * weight_shape[1]
