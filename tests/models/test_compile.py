"""torch.compile traces the SW models without graph breaks (numerics: tests/ops)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from shiftwise.models import create_model, reparameterize


def graph_breaks(model: torch.nn.Module, x: torch.Tensor) -> int:
    torch._dynamo.reset()
    return torch._dynamo.explain(model)(x).graph_break_count


@pytest.mark.slow
def test_sw_tiny_has_no_graph_breaks():
    """Training and deploy forms, default strategy; a small input keeps tracing short."""
    torch.manual_seed(0)
    model = create_model("sw_tiny", num_classes=10)
    x = torch.randn(2, 3, 64, 64)  # BN batch statistics need > 1 value at stage 4
    assert graph_breaks(model.train(), x) == 0
    assert graph_breaks(reparameterize(model.eval()), x) == 0


def test_fused_strategy_custom_op_has_no_graph_breaks():
    """The shift-add custom op path (small convs + shiftwise::shift_add) traces in one graph."""
    torch.manual_seed(0)
    model = create_model("sw_atto", num_classes=4, operator_kwargs={"strategy": "fused"})
    assert graph_breaks(model.train(), torch.randn(2, 3, 64, 64)) == 0
