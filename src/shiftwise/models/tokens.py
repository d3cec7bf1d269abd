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
    shift: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``residual + (scale * tokens + shift) @ weight^T + bias`` as one batched GEMM.

    Args:
        tokens: ``[B, N, D]``.
        weight: ``[C, D]``.
        bias: ``[C]``.
        scale: per-sample channel factors ``[B, D]``, or ``None`` (ones).
        shift: channel offsets ``[D]`` or per sample ``[B, D]``, or ``None`` (zeros).
        residual: ``[B, N, C]`` added by the GEMM, or ``None``.

    The input affine is folded where it touches fewer elements: into the weights (``[B, C, D]``,
    with ``weight @ shift`` added to the bias) when ``C < N``, else into one ``addcmul`` pass
    over the tokens. Returns ``[B, N, C]``, contiguous.
    """
    batch, n_tokens, _ = tokens.shape
    if weight.shape[0] < n_tokens:
        if shift is not None:
            bias = bias + shift @ weight.t()
        if scale is not None:
            weight = weight * scale[:, None, :]
    else:
        if scale is not None and shift is not None:
            tokens = torch.addcmul(shift.reshape(-1, 1, shift.shape[-1]), tokens, scale[:, None])
        elif scale is not None:
            tokens = tokens * scale[:, None, :]
        elif shift is not None:
            tokens = tokens + shift.reshape(-1, 1, shift.shape[-1])
    weight = weight.expand(batch, -1, -1)
    bias = bias.reshape(-1, 1, weight.shape[1])
    if residual is None:
        return torch.baddbmm(bias, tokens, weight.transpose(1, 2))
    return torch.baddbmm(residual, tokens, weight.transpose(1, 2)).add_(bias)
