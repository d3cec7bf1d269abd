"""Geometry of ShiftwiseConv as pure functions: sizes, random tables, strip kernels, folding.

Everything here depends only on its arguments (no module state), so the operator
(:class:`shiftwise.layers.ShiftWiseConv2d`) reads as calls to these functions.

Construction-time random choices (ghost channels and shuffled shift tables):

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
    "SWGeometry",
    "ShiftTables",
    "equivalent_kernel",
    "fold_strips",
    "full_channel_strips",
    "ghost_split",
    "rep_channel_count",
    "shift_tables",
    "strip_kernels",
    "strip_padding",
    "strips_kernel",
    "sw_geometry",
    "term_offsets",
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


def term_offsets(
    geometry: SWGeometry, n_shuffles: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shift-add offsets ``[R*nk, 2]``, ``[R*nk, 2]``, ``[R, 2]`` (h, v, identity), int64.

    Piece pixel ``(y, x)`` is the small-conv window centred on input pixel ``(y - e, x - e)``,
    so block position ``m`` (first tap at ``m*k - K//2``) is read at column
    ``w + m*k - K//2 + k - 1`` and row ``h + e``.
    """
    extra = geometry.extra_pad
    along = torch.tensor(geometry.block_offsets, device=device) + geometry.conv_padding
    along = along.repeat(n_shuffles)
    across = torch.full_like(along, extra)
    identity = torch.full((n_shuffles, 2), extra, device=device)
    return torch.stack([across, along], 1), torch.stack([along, across], 1), identity


def strip_kernels(
    pieces: torch.Tensor, tables: ShiftTables, geometry: SWGeometry
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three branches as plain kernels, assembled (differentiably) from the pieces.

    Args:
        pieces: small-conv weight ``[Cr * nk, 1, k, k]`` (paths summed).
        tables: the shift tables over these pieces.
        geometry: the operator's geometry.

    Returns ``horizontal [Cr, k, nk*k]``, ``vertical [Cr, nk*k, k]`` and ``identity
    [Cr, k, k]``: branch ``H`` equals a depthwise correlation of ``x_rep`` with ``horizontal``
    whose column 0 sits at offset ``span[0]`` and whose middle row is the centre row
    (likewise transposed for ``V``); ``I`` is a centred ``k x k`` conv.
    """
    k, nk = geometry.small_kernel, geometry.n_pieces
    n_rep, n_shuffles = tables.identity.shape
    flat = pieces.reshape(n_rep * nk, k, k)

    def strip(index: torch.Tensor) -> torch.Tensor:
        return flat[index].reshape(n_rep, n_shuffles, nk, k, k).sum(1)

    horizontal = strip(tables.horizontal).permute(0, 2, 1, 3).reshape(n_rep, k, nk * k)
    vertical = strip(tables.vertical).reshape(n_rep, nk * k, k)
    identity = flat[tables.identity].sum(1)
    return horizontal, vertical, identity


def fold_strips(
    kernels: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    scale: torch.Tensor,
    geometry: SWGeometry,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode rep output as two strip kernels: ``(K_H' [Cr, k, L], K_V' [Cr, L, k])``.

    ``K_H' = s_h K_H`` with ``s_i K_I`` and the residual (``+1`` at the centre tap) added into
    its centre ``k x k`` (the horizontal strip covers the centre); ``K_V' = s_v K_V``. With the
    summed BN shift as bias, ``conv(x, K_H') + conv(x, K_V') + bias`` equals
    ``BN_h(H) + BN_v(V) + BN_identity(I) + x_rep``. ``scale``: ``[3, Cr]`` (h, v, identity).
    """
    horizontal, vertical, identity = kernels
    k, centre = geometry.small_kernel, -geometry.span[0]
    start = centre - k // 2
    horizontal = horizontal * scale[0, :, None, None]
    vertical = vertical * scale[1, :, None, None]
    centre_block = identity * scale[2, :, None, None]
    centre_block = centre_block + _unit_centre(centre_block)
    horizontal = torch.cat(
        [
            horizontal[..., :start],
            horizontal[..., start : start + k] + centre_block,
            horizontal[..., start + k :],
        ],
        dim=-1,
    )
    return horizontal, vertical


def full_channel_strips(
    horizontal: torch.Tensor,
    vertical: torch.Tensor,
    bias: torch.Tensor,
    rep_index: torch.Tensor,
    channels: int,
    geometry: SWGeometry,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Folded rep strips (:func:`fold_strips`) spread over all ``C`` channels, in input order.

    Args:
        horizontal: ``[Cr, k, L]``; vertical: ``[Cr, L, k]``; bias: ``[Cr]``.
        rep_index: ``[Cr]`` input channel of each rep row.
        channels: ``C``.
        geometry: the operator's geometry.

    Returns ``horizontal [C, k, L]``, ``vertical [C, L, k]``, ``bias [C]``: rep channels as
    given, ghost channels an identity (one unit tap at the centre of the horizontal strip, zero
    vertical strip and bias), so the two strip convs over all channels give the operator's
    output in input channel order with no channel split.
    """
    k, centre = geometry.small_kernel, -geometry.span[0]
    full_h = horizontal.new_zeros(channels, *horizontal.shape[1:])
    full_h[:, k // 2, centre] = 1.0
    full_h = full_h.index_copy(0, rep_index, horizontal)
    full_v = vertical.new_zeros(channels, *vertical.shape[1:]).index_copy(0, rep_index, vertical)
    full_b = bias.new_zeros(channels).index_copy(0, rep_index, bias)
    return full_h, full_v, full_b


def _unit_centre(block: torch.Tensor) -> torch.Tensor:
    """``[..., k, k]`` zeros with a one at the centre tap."""
    k = block.shape[-1]
    unit = torch.zeros_like(block)
    unit[..., k // 2, k // 2] = 1.0
    return unit


def strip_padding(geometry: SWGeometry) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(top, bottom, left, right)`` paddings of the horizontal and the vertical strip conv."""
    first, last = geometry.span
    half = geometry.small_kernel // 2
    along, across = (-first, last), (half, half)
    return (*across, *along), (*along, *across)


def equivalent_kernel(
    kernels: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    scale: torch.Tensor,
    geometry: SWGeometry,
) -> torch.Tensor:
    """The rep output of the three branches (scaled, plus the residual) as one kernel.

    Returns ``[Cr, S, S]``, ``S = 2 * max(-span[0], span[1]) + 1`` odd, centred.
    """
    horizontal, vertical, identity = kernels
    k, nk = geometry.small_kernel, geometry.n_pieces
    first, last = geometry.span
    half = max(-first, last)
    size = 2 * half + 1
    near, start = half - k // 2, half + first
    kernel = identity.new_zeros(identity.shape[0], size, size)
    kernel[:, near : near + k, start : start + nk * k] += horizontal * scale[0, :, None, None]
    kernel[:, start : start + nk * k, near : near + k] += vertical * scale[1, :, None, None]
    kernel[:, near : near + k, near : near + k] += identity * scale[2, :, None, None]
    kernel[:, half, half] += 1.0
    return kernel


def strips_kernel(
    horizontal: torch.Tensor, vertical: torch.Tensor, geometry: SWGeometry
) -> torch.Tensor:
    """Folded strips (:func:`fold_strips`) ``[Cr, k, L]``, ``[Cr, L, k]`` as one ``[Cr, S, S]``
    kernel, ``S = 2 * max(-span[0], span[1]) + 1`` odd, centred."""
    k, (first, last) = geometry.small_kernel, geometry.span
    half = max(-first, last)
    size, length = 2 * half + 1, horizontal.shape[-1]
    near, start = half - k // 2, half + first
    kernel = horizontal.new_zeros(horizontal.shape[0], size, size)
    kernel[:, near : near + k, start : start + length] += horizontal
    kernel[:, start : start + length, near : near + k] += vertical
    return kernel
