"""The training data order: a seeded permutation per epoch, dealt to the ranks, resumable."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler"]


class EpochSampler(Sampler[int]):
    """This rank's share of a permutation seeded by ``(seed, epoch)``, minus a skipped prefix.

    The first ``num_samples * world`` entries of the permutation are dealt round-robin to the
    ranks; :meth:`set_epoch` selects the epoch and how many of this rank's samples were
    already consumed (a resumed mid-epoch run).
    """

    def __init__(self, size: int, num_samples: int, seed: int, rank: int, world: int) -> None:
        self.size, self.num_samples, self.seed = size, num_samples, seed
        self.rank, self.world = rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[: self.num_samples * self.world]
        return iter(order[self.rank :: self.world][self.skip :].tolist())

    def __len__(self) -> int:
        return self.num_samples - self.skip
