"""Deploy form of a group-sparse ShiftWiseConv2d: pruned pieces are removed from the computation.

After group-sparse training many small-conv pieces of a shift-wise operator are exactly zero.
The dense deploy form still convolves them and shifts them into every output position. Here
only the ``A`` active pieces remain:

1. the small conv runs on the active pieces only, each as its own depthwise filter on a
   gathered copy of its input channel: ``conv2d(x_rep[:, piece_channel], w_active,
   groups=A)`` (pieces per channel are no longer uniform, so ``groups=Cr`` cannot be used);
2. the shift-add visits only the (output channel, term) pairs whose piece is active, in
   scatter form: the terms sharing one offset are done together, one ``index_select`` of
   the active pieces' shifted windows and one ``index_add_`` into their output channels.

Work and memory scale with the number of active pieces; with no pruned piece the result is
the same computation as the dense deploy form, only organised by offset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CompactShiftAdd", "active_pieces"]

_BRANCHES = ("horizontal", "vertical", "identity")


def active_pieces(weight: torch.Tensor) -> torch.Tensor:
    """Indices ``[A]`` (int64, ascending) of the pieces of ``weight [P, 1, k, k]`` not all zero."""
    return weight.detach().flatten(1).ne(0).any(1).nonzero().flatten()


class CompactShiftAdd(nn.Module):
    """Small conv + the three shift-add branches of a deployed SW operator, active pieces only.

    Args:
        weight: merged small-conv weight ``[Cr * nk, 1, k, k]``; all-zero pieces are dropped.
        n_pieces: ``nk``, pieces per rep channel (piece ``p`` belongs to channel ``p // nk``).
        conv_padding: padding of the small conv (``k - 1``).
        tables: ``{"horizontal" | "vertical" | "identity": (index [Cr, T], offsets [T, 2])}``,
            the gather tables of :func:`shiftwise.ops.shift_add` over the full piece set.

    ``forward(x_rep, out_size)`` returns the horizontal, vertical and identity outputs, each
    ``[B, Cr, H, W]``, equal to the shift-adds of the full pieces.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        n_pieces: int,
        conv_padding: int,
        tables: dict[str, tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        super().__init__()
        if set(tables) != set(_BRANCHES):
            raise ValueError(f"tables: expected the keys {_BRANCHES}, got {sorted(tables)}")
        active = active_pieces(weight)
        self.n_rep = tables["identity"][0].shape[0]
        self.n_pieces = n_pieces
        self.conv_padding = conv_padding
        self.weight = nn.Parameter(weight.detach()[active].clone())
        self.register_buffer("active_index", active)
        self.register_buffer("piece_channel", torch.div(active, n_pieces, rounding_mode="floor"))
        compact = torch.full((weight.shape[0],), -1, dtype=torch.long, device=active.device)
        compact[active] = torch.arange(active.numel(), device=active.device)
        self._plans: dict[str, list[tuple[tuple[int, int], int]]] = {}
        for branch in _BRANCHES:
            index, offsets = tables[branch]
            sources, channels, plan = _scatter_plan(compact, index, offsets)
            self.register_buffer(f"{branch}_sources", sources)
            self.register_buffer(f"{branch}_channels", channels)
            self._plans[branch] = plan

    @property
    def n_active(self) -> int:
        return self.weight.shape[0]

    def full_weight(self) -> torch.Tensor:
        """The merged weight over all ``Cr * nk`` pieces, pruned ones zero."""
        full = self.weight.new_zeros(self.n_rep * self.n_pieces, *self.weight.shape[1:])
        return full.index_copy(0, self.active_index, self.weight)

    def forward(
        self, x_rep: torch.Tensor, out_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x_rep [B, Cr, H, W]`` -> horizontal, vertical, identity ``[B, Cr, *out_size]``."""
        batch = x_rep.shape[0]
        height, width = out_size
        if self.n_active == 0:
            zeros = x_rep.new_zeros(batch, self.n_rep, height, width)
            return zeros, zeros.clone(), zeros.clone()
        gathered = x_rep.index_select(1, self.piece_channel)
        y = F.conv2d(gathered, self.weight, padding=self.conv_padding, groups=self.n_active)
        return tuple(self._scatter(y, branch, out_size) for branch in _BRANCHES)

    def _scatter(self, y: torch.Tensor, branch: str, out_size: tuple[int, int]) -> torch.Tensor:
        """``out[:, c] += y[:, s]`` shifted, for every active (channel ``c``, piece ``s``) pair."""
        height, width = out_size
        y_height, y_width = y.shape[-2:]
        out = y.new_zeros(y.shape[0], self.n_rep, height, width)
        sources = getattr(self, f"{branch}_sources")
        channels = getattr(self, f"{branch}_channels")
        start = 0
        for (row, col), count in self._plans[branch]:
            src, dst = sources[start : start + count], channels[start : start + count]
            start += count
            top, bottom = max(0, -row), min(height, y_height - row)
            left, right = max(0, -col), min(width, y_width - col)
            if top >= bottom or left >= right:
                continue
            # Select whole pieces, then crop: index_select on a cropped view is far slower.
            pieces = y.index_select(1, src)[
                :, :, top + row : bottom + row, left + col : right + col
            ]
            out[:, :, top:bottom, left:right].index_add_(1, dst, pieces)
        return out

    def extra_repr(self) -> str:
        total = self.n_rep * self.n_pieces
        return f"active_pieces={self.n_active}/{total}, rep_channels={self.n_rep}"


def _scatter_plan(
    compact: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[tuple[int, int], int]]]:
    """Group the active (channel, term) pairs of a gather table by their offset.

    ``compact [P]`` maps a piece to its position among the active ones (``-1`` if pruned).
    Returns the concatenated active sources and output channels (int64) and the plan: one
    ``((row, col), count)`` per distinct offset (offsets sorted).
    """
    channel_of = torch.arange(index.shape[0], device=index.device).unsqueeze(1).expand_as(index)
    position = compact.to(index.device)[index]
    sources, channels, plan = [], [], []
    unique, inverse = torch.unique(offsets, dim=0, return_inverse=True)
    for u in range(unique.shape[0]):
        terms = (inverse == u).nonzero().flatten()
        pos = position[:, terms].flatten()
        chan = channel_of[:, terms].flatten()
        alive = pos >= 0
        if not bool(alive.any()):
            continue
        sources.append(pos[alive])
        channels.append(chan[alive])
        row, col = unique[u].tolist()
        plan.append(((row, col), int(alive.sum())))
    empty = torch.zeros(0, dtype=torch.long, device=index.device)
    return (
        torch.cat(sources) if sources else empty,
        torch.cat(channels) if channels else empty,
        plan,
    )
