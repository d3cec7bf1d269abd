"""Cosine decay of the prune rate of dynamic sparse training (SLaK / SW ``CosineDecay``)."""

from __future__ import annotations

import math

__all__ = ["cosine_prune_rate"]


def cosine_prune_rate(step: int, total_steps: int, initial: float, minimum: float = 0.005) -> float:
    """Prune rate at optimizer step ``step``: ``min + (p0 - min) * (1 + cos(pi t / T)) / 2``.

    ``t = min(step, T)``; this is what the official code obtains from ``CosineAnnealingLR``
    (``eta_min = 0.005``) on a dummy optimizer, written in closed form.
    """
    t = min(max(step, 0), total_steps)
    return minimum + (initial - minimum) * (1.0 + math.cos(math.pi * t / total_steps)) / 2.0
