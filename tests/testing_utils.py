"""Shared test helpers (importable from every test directory: ``pythonpath`` in pyproject)."""

from __future__ import annotations

import torch
from torch import nn


def randomize_batchnorm(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                shape = bn.running_mean.shape
                bn.running_mean.copy_(torch.rand(shape, generator=generator) * 2 - 1)
                bn.running_var.copy_(torch.rand(shape, generator=generator) * 1.5 + 0.5)
                if bn.affine:
                    bn.weight.copy_(torch.rand(shape, generator=generator) * 2 - 1)
                    bn.bias.copy_(torch.rand(shape, generator=generator) * 2 - 1)
