"""Construction-time random choices of ShiftwiseConv: ghost channels and shuffled shift tables.

The official SW v2 operator draws, in every constructor,

1. the ghost channels with NumPy's legacy generator seeded 123:
   ``sorted(RandomState(123).choice(C, C - Cr, replace=False))``;
2. the shuffles with ``torch.manual_seed(123)``, in this order: for each of the ``R`` groups and
   each rep channel a permutation of its ``nk`` pieces for the horizontal branch; the same for
   the vertical branch; then for each group one random piece per channel for the identity.

We draw the same numbers from *local* generators (``seed`` argument, 123 reproduces the
official tables exactly, which official checkpoints need) instead of reseeding the global RNG.
The tables are returned in the gather form of :func:`shiftwise.ops.shift_add`: for the term
``(group r, block position m)`` channel ``c`` reads piece ``c * nk + perm[r][c][m]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "GHOST_RULES",
    "ShiftTables",
    "ghost_split",
    "rep_channel_count",
    "shift_tables",
    "sw_geometry",
]


@dataclass(frozen=True)
class SWGeometry:
    """Derived constants of a shift-wise operator with big kernel ``K`` and small kernel ``k``.

    Attributes:
        n_pieces: ``nk = ceil(K / k)`` pieces per channel.
        conv_padding: padding of the small convolutions, ``k - 1`` ("full" convolution).
        extra_pad: ``e = k - 1 - k // 2``, the margin of the pieces around the input frame.
        block_offsets: ``[nk]`` column (row) offset of the first tap of block position ``m``
            relative to the output pixel: ``m * k - K // 2``.
    """

    kernel_size: int
    small_kernel: int
    n_pieces: int
    conv_padding: int
    extra_pad: int
    block_offsets: tuple[int, ...]

    @property
    def span(self) -> tuple[int, int]:
        """First and last tap offset covered by the strips, relative to the centre."""
        return self.block_offsets[0], self.block_offsets[-1] + self.small_kernel - 1


def sw_geometry(kernel_size: int, small_kernel: int) -> SWGeometry:
    """Constants of the official operator (``nk``, paddings, block offsets) for ``K``, ``k``."""
    n_pieces = math.ceil(kernel_size / small_kernel)
    conv_padding = small_kernel - 1
    offsets = tuple(m * small_kernel - kernel_size // 2 for m in range(n_pieces))
    return SWGeometry(
        kernel_size=kernel_size,
        small_kernel=small_kernel,
        n_pieces=n_pieces,
        conv_padding=conv_padding,
        extra_pad=conv_padding - small_kernel // 2,
        block_offsets=offsets,
    )


GHOST_RULES = ("v2", "v1")


def rep_channel_count(channels: int, ghost_ratio: float, ghost_rule: str = "v2") -> int:
    """``Cr``, the channels that go through the op, by the official rule ``ghost_rule``.

    ``"v2"`` (SW v2, SW-T/S/B): ``Cr = floor(floor(C * (1 - ghost_ratio)) / 2) * 2`` (even);
    ``"v1"`` (``backbones/SW_v1_slak.py``): ``Cr = C - floor(C * ghost_ratio)``.
    """
    if ghost_rule == "v1":
        return channels - int(channels * ghost_ratio)
    if ghost_rule != "v2":
        raise ValueError(f"ghost_rule: expected one of {GHOST_RULES}, got {ghost_rule!r}")
    return int(channels * (1.0 - ghost_ratio)) // 2 * 2


def ghost_split(
    channels: int, ghost_ratio: float, seed: int, ghost_rule: str = "v2"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted ``(rep_index [Cr], ghost_index [C - Cr])`` int64, drawn as the official code does.

    ``Cr`` follows ``ghost_rule`` (:func:`rep_channel_count`); both versions draw the ghost
    channels the same way.
    """
    n_rep = rep_channel_count(channels, ghost_ratio, ghost_rule)
    n_ghost = channels - n_rep
    chosen = np.random.RandomState(seed).choice(channels, n_ghost, replace=False)
    ghost = np.sort(chosen).astype(np.int64)
    rep = np.setdiff1d(np.arange(channels), ghost).astype(np.int64)
    return torch.from_numpy(rep), torch.from_numpy(ghost)


@dataclass(frozen=True)
class ShiftTables:
    """Gather tables of the three shift-add branches (all int64).

    Attributes:
        horizontal: ``[Cr, R * nk]``; column ``r * nk + m`` is the piece channel that channel
            ``c`` places at horizontal block position ``m`` in group ``r``.
        vertical: same for the vertical strip.
        identity: ``[Cr, R]``, the piece each channel adds at the centre in group ``r``.
    """

    horizontal: torch.Tensor
    vertical: torch.Tensor
    identity: torch.Tensor


def shift_tables(n_rep: int, n_pieces: int, n_shuffles: int, seed: int) -> ShiftTables:
    """Draw the shuffles of the official operator from ``torch.Generator().manual_seed(seed)``."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.arange(n_rep).unsqueeze(1) * n_pieces

    def permutations() -> torch.Tensor:
        groups = [
            torch.stack([torch.randperm(n_pieces, generator=generator) for _ in range(n_rep)])
            for _ in range(n_shuffles)
        ]
        return torch.cat(groups, dim=1) + base

    horizontal = permutations()
    vertical = permutations()
    picks = [torch.randint(0, n_pieces, (n_rep,), generator=generator) for _ in range(n_shuffles)]
    identity = torch.stack(picks, dim=1) + base
    return ShiftTables(horizontal, vertical, identity)
