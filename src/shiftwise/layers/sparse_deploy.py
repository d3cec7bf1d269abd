"""Deploy form of a group-sparse ShiftWiseConv2d: pruned pieces are removed from the computation.

After group-sparse training many small-conv pieces of a shift-wise operator are exactly zero.
The dense deploy form still convolves them and shifts them into every output position. Here
only the ``A`` active pieces remain:

1. the small conv computes the active pieces only. Pieces per channel are no longer
   uniform, so it runs in one of two layouts: ``"gather"``, each active piece its own
   depthwise filter on a gathered copy of its input channel (``conv2d(x_rep[:,
   piece_channel], w_active, groups=A)``, exactly ``A`` outputs), or ``"padded"``, every
   channel given ``m = max_c(active pieces of c)`` output slots (``conv2d(x_rep, w_slots,
   groups=Cr)``, ``Cr * m`` outputs, the unused slots zero and never read), which avoids the
   gather and uses the faster channel-multiplier convolution on CPU;
2. the shift-add visits only the (output channel, term) pairs whose piece is active: the
   terms sharing one offset are summed before shifting, as in the fast dense kernel
   (:mod:`shiftwise.ops.shift_add_torch`), with one ``F.embedding_bag(mode="sum")`` per
   distinct offset over ragged bags (channel ``c``'s bag holds its active pieces at that
   offset, possibly none), then the sum is added into the shifted output window.

Samples are processed one at a time: a sample's conv output ``[S, Hy, Wy]`` is already the
channel-major table the bags read, so no transpose copy is made, and it stays small enough
for the CPU caches (2-3x faster than batching at SW-T stage-1 shapes). Work and memory
scale with the number of active pieces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LAYOUTS", "PADDED_SLOT_RATIO", "CompactShiftAdd", "active_pieces"]

_BRANCHES = ("horizontal", "vertical", "identity")
LAYOUTS = ("auto", "gather", "padded")
# "auto" pads while the padded conv computes at most this many times the active pieces: on
# CPU the channel-multiplier conv of the padded layout was about 2-3x faster per output than
# the one-filter-per-channel conv of the gather layout (benchmarks/bench_group_sparsity.py).
PADDED_SLOT_RATIO = 2.0


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
        layout: ``"gather"``, ``"padded"`` (module docstring) or ``"auto"``: padded when
            it computes at most ``PADDED_SLOT_RATIO`` times the active pieces.

    ``forward(x_rep, out_size)`` returns the horizontal, vertical and identity outputs, each
    ``[B, Cr, H, W]``, equal to the shift-adds of the full pieces.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        n_pieces: int,
        conv_padding: int,
        tables: dict[str, tuple[torch.Tensor, torch.Tensor]],
        layout: str = "auto",
    ) -> None:
        super().__init__()
        if set(tables) != set(_BRANCHES):
            raise ValueError(f"tables: expected the keys {_BRANCHES}, got {sorted(tables)}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
        active = active_pieces(weight)
        self.n_rep = tables["identity"][0].shape[0]
        self.n_pieces = n_pieces
        self.conv_padding = conv_padding
        channel = torch.div(active, n_pieces, rounding_mode="floor")
        per_channel = torch.bincount(channel, minlength=self.n_rep)
        slots = int(per_channel.max()) if active.numel() else 0
        if layout == "auto":
            padded = self.n_rep * slots <= PADDED_SLOT_RATIO * active.numel()
            layout = "padded" if padded else "gather"
        self.layout = layout
        if layout == "padded":
            rank = (
                torch.arange(active.numel(), device=active.device)
                - (torch.cumsum(per_channel, 0) - per_channel)[channel]
            )
            slot = channel * slots + rank
            n_slots = self.n_rep * slots
        else:
            slot = torch.arange(active.numel(), device=active.device)
            n_slots = active.numel()
        slot_weight = weight.detach().new_zeros(n_slots, *weight.shape[1:])
        slot_weight[slot] = weight.detach()[active]
        self.weight = nn.Parameter(slot_weight)
        self.register_buffer("active_index", active)
        self.register_buffer("active_slot", slot)
        self.register_buffer("slot_channel", channel)
        compact = torch.full((weight.shape[0],), -1, dtype=torch.long, device=active.device)
        compact[active] = slot
        self._plans: dict[str, list[tuple[tuple[int, int], int]]] = {}
        for branch in _BRANCHES:
            index, offsets = tables[branch]
            sources, starts, plan = _scatter_plan(compact, index, offsets)
            self.register_buffer(f"{branch}_sources", sources)
            self.register_buffer(f"{branch}_starts", starts)
            self._plans[branch] = plan

    @property
    def n_active(self) -> int:
        """Number of active pieces ``A``."""
        return self.active_index.shape[0]

    def full_weight(self) -> torch.Tensor:
        """The merged weight over all ``Cr * nk`` pieces, pruned ones zero."""
        full = self.weight.new_zeros(self.n_rep * self.n_pieces, *self.weight.shape[1:])
        return full.index_copy(0, self.active_index, self.weight[self.active_slot])

    def forward(
        self, x_rep: torch.Tensor, out_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x_rep [B, Cr, H, W]`` -> horizontal, vertical, identity ``[B, Cr, *out_size]``."""
        batch = x_rep.shape[0]
        height, width = out_size
        if self.n_active == 0:
            zeros = x_rep.new_zeros(batch, self.n_rep, height, width)
            return zeros, zeros.clone(), zeros.clone()
        outputs = x_rep.new_zeros(3, batch, self.n_rep, height, width)
        # One sample at a time: its conv output [S, Hy, Wy] is already the channel-major
        # table the bags read (no transpose copy), and it stays small enough for the cache.
        for b in range(batch):
            sample = x_rep[b : b + 1]
            if self.layout == "padded":
                y = F.conv2d(sample, self.weight, padding=self.conv_padding, groups=self.n_rep)
            else:
                gathered = sample.index_select(1, self.slot_channel)
                y = F.conv2d(gathered, self.weight, padding=self.conv_padding, groups=self.n_active)
            for i, branch in enumerate(_BRANCHES):
                self._scatter(y[0], branch, outputs[i, b])
        return outputs[0], outputs[1], outputs[2]

    def _scatter(self, y: torch.Tensor, branch: str, out: torch.Tensor) -> None:
        """``out[c] += slot s`` shifted, for every active (channel ``c``, slot ``s``) pair.

        ``y [S, Hy, Wy]``: the conv output slots of one sample; ``out [Cr, H, W]`` (in place).
        """
        height, width = out.shape[-2:]
        slots, y_height, y_width = y.shape
        table = y.reshape(slots, y_height * y_width)
        sources = getattr(self, f"{branch}_sources")
        starts = getattr(self, f"{branch}_starts")
        first = 0
        for u, ((row, col), count) in enumerate(self._plans[branch]):
            bags = sources[first : first + count]
            bag_starts = starts[u * self.n_rep : (u + 1) * self.n_rep]
            first += count
            top, bottom = max(0, -row), min(height, y_height - row)
            left, right = max(0, -col), min(width, y_width - col)
            if top >= bottom or left >= right:
                continue
            summed = F.embedding_bag(bags, table, bag_starts, mode="sum")
            summed = summed.view(self.n_rep, y_height, y_width)
            out[:, top:bottom, left:right].add_(
                summed[:, top + row : bottom + row, left + col : right + col]
            )

    def extra_repr(self) -> str:
        total = self.n_rep * self.n_pieces
        return (
            f"active_pieces={self.n_active}/{total}, rep_channels={self.n_rep}, "
            f"layout={self.layout!r}"
        )


def _scatter_plan(
    compact: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[tuple[int, int], int]]]:
    """Ragged bags of active pieces per output channel, one set per distinct offset.

    ``compact [P]`` maps a piece to its conv output slot (``-1`` if pruned).
    Returns, over the distinct offsets that read at least one active piece (sorted): the
    concatenated bags (slots of active pieces, channel-major, int64), the start of each
    channel's bag within its offset's bags (``[U * Cr]``, int64), and the plan: one
    ``((row, col), count)`` per offset, ``count`` being the length of its bags.
    """
    position = compact.to(index.device)[index]
    sources, starts, plan = [], [], []
    unique, inverse = torch.unique(offsets, dim=0, return_inverse=True)
    for u in range(unique.shape[0]):
        pos = position[:, inverse == u]
        alive = pos >= 0
        count = int(alive.sum())
        if count == 0:
            continue
        sizes = alive.sum(1)
        sources.append(pos[alive])
        starts.append(torch.cumsum(sizes, 0) - sizes)
        row, col = unique[u].tolist()
        plan.append(((row, col), count))
    empty = torch.zeros(0, dtype=torch.long, device=index.device)
    return (
        torch.cat(sources) if sources else empty,
        torch.cat(starts) if starts else empty,
        plan,
    )
