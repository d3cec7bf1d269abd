"""Channels-last token views and the per-sample scaled projections of the deployed blocks.

A ``[B, C, H, W]`` tensor in channels-last memory is, without a copy, the token matrix
``[B, H*W, C]`` that the blocks' MLPs multiply. The deployed blocks keep the residual stream in
that layout so that no permute copies are made between the depthwise conv and the MLP.
"""

from __future__ import annotations

import torch

__all__ = ["channel_tokens", "grn_response_scale", "linear_tokens", "tokens_to_channels_first"]


def channel_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, H*W, C]``; a view when ``x`` is channels-last, else a copy."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def tokens_to_channels_first(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H*W, C] -> [B, C, H, W]``, a channels-last view of contiguous ``tokens``."""
    return tokens.unflatten(1, (height, width)).permute(0, 3, 1, 2)


def linear_tokens(
    tokens: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``residual + (scale * tokens + shift) @ weight^T + bias`` as one ``addmm`` over all tokens.

    Args:
        tokens: ``[B, N, D]``.
        weight: ``[C, D]``.
        bias: ``[C]``.
        scale: per-sample channel factors ``[B, D]``, or ``None`` (ones).
        shift: per-sample channel offsets ``[B, D]``, or ``None`` (zeros).
        residual: ``[B, N, C]`` added by the GEMM, or ``None``.

    The per-sample affine is one broadcast pass over the tokens (not per-sample weights: a
    batched GEMM is slower than one ``addmm`` over ``B * N`` rows on CPU). Returns ``[B, N, C]``,
    contiguous.
    """
    batch, n_tokens, features = tokens.shape
    if scale is not None and shift is not None:
        tokens = torch.addcmul(shift.unsqueeze(1), tokens, scale.unsqueeze(1))
    elif scale is not None:
        tokens = tokens * scale.unsqueeze(1)
    elif shift is not None:
        tokens = tokens + shift.unsqueeze(1)
    flat = tokens.reshape(batch * n_tokens, features)
    if residual is None:
        out = torch.addmm(bias, flat, weight.t())
    else:
        out = torch.addmm(residual.reshape(batch * n_tokens, -1), flat, weight.t()).add_(bias)
    return out.view(batch, n_tokens, weight.shape[0])


def grn_response_scale(tokens: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """GRN's per-sample factor ``gamma * Nx + 1``, ``[B, D]``, of tokens ``[B, N, D]``.

    ``Nx = ||x||_N / (mean_D ||x||_N + 1e-6)``, ``gamma [D]``; ``GRN(x) = factor * x + beta``.
    The norm is taken as ``sqrt(sum(x^2))``, several times faster on CPU than ``vector_norm``
    over the token dimension (its gradient is undefined for an all-zero channel: inference only).
    """
    gx = tokens.square().sum(dim=1).sqrt()
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    return nx * gamma + 1.0
