"""Tiny models for the sparse-training tests: SW and SLaK operators in two 'stages'."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shiftwise.layers import ShiftWiseConv2d, SLaKConv2d


class TinyNet(nn.Module):
    """Stage 0: SW + SLaK operators; stage 1: SW; then a linear head. Input ``[B, 8, H, W]``."""

    def __init__(self, n_paths: int = 2) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            [
                nn.Sequential(
                    ShiftWiseConv2d(8, 13, 3, n_paths=n_paths),
                    SLaKConv2d(8, 13, short_side=3, small_kernel=3),
                ),
                nn.Sequential(ShiftWiseConv2d(8, 7, 3, n_paths=n_paths)),
            ]
        )
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(x.mean((2, 3)))


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 8, 10, 10, generator=generator), torch.randint(
        0, 5, (4,), generator=generator
    )


def _train_steps(model, optimizer, masking, batch, steps, check=None) -> None:
    """Run ``steps`` optimizer steps with ``masking.step()`` after each; ``check()`` after each."""
    inputs, labels = batch
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        masking.step()
        if check is not None:
            check()


@pytest.fixture
def train_steps():
    """``train_steps(model, optimizer, masking, batch, steps, check=None)``."""
    return _train_steps


@pytest.fixture
def tiny_net_class() -> type[TinyNet]:
    return TinyNet
