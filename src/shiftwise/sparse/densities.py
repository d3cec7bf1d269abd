"""Initial layer-wise densities: Erdős–Rényi-Kernel, uniform and SNIP.

All functions work on per-layer sizes only (no model), so they are easy to test. ``numels``
count parameter entries, the budget is ``density * sum(numels)`` entries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["erk_densities", "snip_keep", "uniform_densities", "unit_counts"]


def uniform_densities(n_layers: int, density: float) -> list[float]:
    """Every layer at ``density``."""
    return [float(density)] * n_layers


def erk_densities(
    shapes: Sequence[Sequence[int]],
    numels: Sequence[int],
    density: float,
    power: float = 1.0,
) -> list[float]:
    """Erdős–Rényi-Kernel densities ``d_l = eps * raw_l``, ``raw_l = (Σ shape / Π shape)^power``.

    ``eps`` is chosen so that ``sum_l d_l * n_l = density * sum_l n_l``. A layer whose
    density would exceed 1 is made dense (the layers with the largest ``raw_l`` first, as in
    the official code) and ``eps`` is solved again over the others until every density is
    at most 1. ``shapes`` give the tensor dims behind ``raw_l``; ``numels`` the entries
    ``n_l`` counted in the budget (several for shared masks).
    """
    if len(shapes) != len(numels):
        raise ValueError(
            f"numels: expected {len(shapes)} entries (one per shape), got {len(numels)}"
        )
    raw = [(sum(shape) / math.prod(shape)) ** power for shape in shapes]
    total = sum(numels)
    dense: set[int] = set()
    eps = 0.0
    while len(dense) < len(raw):
        free = [i for i in range(len(raw)) if i not in dense]
        budget = density * total - sum(numels[i] for i in dense)
        eps = budget / sum(raw[i] * numels[i] for i in free)
        largest = max(raw[i] for i in free)
        if eps * largest <= 1.0:
            break
        dense.update(i for i in free if raw[i] == largest)
    return [1.0 if i in dense else eps * raw[i] for i in range(len(raw))]


def snip_keep(
    scores: Sequence[torch.Tensor], unit_sizes: Sequence[int], density: float
) -> list[torch.Tensor]:
    """SNIP selection: keep the highest-scoring units globally until the entry budget is spent.

    ``scores[l]`` holds one score per mask unit of layer ``l`` (any shape), each unit
    standing for ``unit_sizes[l]`` parameter entries. Units are ranked by score over all
    layers (ties broken by position) and kept while the cumulative entry count stays within
    ``density * total``. Returns one bool tensor per layer, shaped like its scores.
    """
    flat = torch.cat([s.detach().flatten().double().cpu() for s in scores])
    sizes = torch.cat(
        [
            torch.full((s.numel(),), size, dtype=torch.float64)
            for s, size in zip(scores, unit_sizes, strict=True)
        ]
    )
    budget = density * float(sizes.sum())
    order = torch.sort(flat, descending=True, stable=True).indices
    keep_sorted = torch.cumsum(sizes[order], 0) <= budget + 0.5
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order[keep_sorted]] = True
    return [
        part.reshape(s.shape).to(s.device)
        for part, s in zip(keep.split([s.numel() for s in scores]), scores, strict=True)
    ]


def unit_counts(
    densities: Sequence[float], n_units: Sequence[int], unit_sizes: Sequence[int]
) -> list[int]:
    """Units to keep per layer so that the total matches ``sum_l d_l * n_l * size_l`` closely.

    Each layer keeps ``floor(d_l * n_l)`` units; then, in order of the largest fractional
    remainder, layers get one more unit while that brings the kept entries closer to the
    budget. The result is within half a unit of the budget (rounding each layer separately
    can be off by up to half a unit per layer).
    """
    wanted = [d * n for d, n in zip(densities, n_units, strict=True)]
    counts = [min(n, math.floor(w + 1e-9)) for w, n in zip(wanted, n_units, strict=True)]
    remaining = sum((w - c) * size for w, c, size in zip(wanted, counts, unit_sizes, strict=True))
    for i in sorted(range(len(counts)), key=lambda i: counts[i] - wanted[i]):
        if counts[i] < n_units[i] and abs(remaining - unit_sizes[i]) < abs(remaining):
            counts[i] += 1
            remaining -= unit_sizes[i]
    return counts
