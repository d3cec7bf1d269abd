"""Shared test helpers (importable from every test directory: ``pythonpath`` in pyproject)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

OFFICIAL_KEYS = Path(__file__).parent / "tools" / "official_keys"


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


def official_state_dict(listing: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the key names and shapes of the official checkpoint listing
    ``tests/tools/official_keys/<listing>`` (BN running variances positive)."""
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for line in (OFFICIAL_KEYS / listing).read_text().splitlines():
        key, shape = line.split("\t")
        dims = tuple(int(v) for v in re.findall(r"\d+", shape))
        if key.endswith("num_batches_tracked"):
            state_dict[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state_dict[key] = torch.rand(dims, generator=generator) + 0.5
        else:
            state_dict[key] = torch.randn(dims, generator=generator) * 0.02
    return state_dict
