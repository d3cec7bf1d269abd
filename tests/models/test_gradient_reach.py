"""Gradients reach every large-kernel weight of every registered model (training mode).

A block that cut its token mixer off the graph (e.g. ``.detach()`` after ``conv_dw``) would
still train its MLP and pass every shape and loss check; this test fails on it.
"""

from __future__ import annotations

import pytest
import torch

import shiftwise
from shiftwise.layers import LargeKernelOperator
from shiftwise.models import create_model


def mixer_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Large-kernel weights of every operator (interface), and plain depthwise mixer weights."""
    params = dict(model.named_parameters())
    found = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, LargeKernelOperator):
            for weights in module.large_kernel_parameters():
                found.update({prefix + n: params[prefix + n] for n in weights.names})
        elif name.endswith("conv_dw"):
            found.update({prefix + n: p for n, p in module.named_parameters()})
    return found


@pytest.mark.parametrize("name", shiftwise.list_models())
def test_gradients_reach_every_large_kernel_weight(name: str) -> None:
    torch.manual_seed(0)
    small = name.endswith("_atto")
    overrides = {} if small else {"depths": (1, 1, 1, 1)}
    model = create_model(name, num_classes=3, **overrides).train()
    size = 64 if small else 32
    x = torch.randn(2, 3, size, size)
    out = model(x)
    (out * torch.randn(out.shape)).sum().backward()
    targets = mixer_parameters(model)
    n_blocks = sum(1 for n, _ in model.named_modules() if n.endswith("conv_dw"))
    assert n_blocks == sum(model.depths)
    assert len(targets) >= n_blocks
    missing = [n for n, p in targets.items() if p.grad is None or not bool(p.grad.ne(0).any())]
    assert not missing, f"no gradient reaches {missing[:3]} ({len(missing)} in all)"
