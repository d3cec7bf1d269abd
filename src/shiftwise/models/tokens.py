"""Channels-last token views and the per-sample scaled projections of the deployed blocks.

A ``[B, C, H, W]`` tensor in channels-last memory is, without a copy, the token matrix
``[B, H*W, C]`` that the blocks' MLPs multiply. The deployed blocks keep the residual stream in
that layout so that no permute copies are made between the depthwise conv and the MLP.
"""

from __future__ import annotations

import torch

__all__ = ["channel_tokens", "linear_tokens", "tokens_to_channels_first"]


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
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``residual + (scale * tokens) @ weight^T + bias`` as one batched GEMM.

    Args:
        tokens: ``[B, N, D]``.
        weight: ``[C, D]``.
        bias: ``[C]``, or per sample ``[B, C]``.
        scale: per-sample channel factors ``[B, D]`` or ``None``. They multiply the weights
            (``[B, C, D]``) when those are fewer elements than the tokens (``C < N``), else the
            tokens; both give the same product.
        residual: ``[B, N, C]`` added by the GEMM, or ``None``.

    Returns ``[B, N, C]``, contiguous.
    """
    batch, n_tokens, _ = tokens.shape
    if scale is None:
        weight = weight.expand(batch, -1, -1)
    elif weight.shape[0] < n_tokens:
        weight = weight * scale[:, None, :]
    else:
        tokens = tokens * scale[:, None, :]
        weight = weight.expand(batch, -1, -1)
    bias = bias.reshape(-1, 1, weight.shape[1])
    if residual is None:
        return torch.baddbmm(bias, tokens, weight.transpose(1, 2))
    return torch.baddbmm(residual, tokens, weight.transpose(1, 2)).add_(bias)
