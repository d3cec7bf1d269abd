"""SLaK's trade: 1.3x width at 40% sparsity costs about the parameters of the dense 1x model."""

from __future__ import annotations

import pytest
import torch

from shiftwise.models import create_model
from shiftwise.sparse import Masking, sparsity_report


def _nonzero_at_density(name: str, width_factor: float, density: float) -> tuple[int, int]:
    """(non-zero, all) parameters of ``name`` after ERK masking of all 2-D/4-D weights."""
    torch.manual_seed(0)
    model = create_model(name, width_factor=width_factor)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    Masking(model, optimizer, density=density, init="erk", targets="all", total_steps=1)
    report = sparsity_report(model)
    return report.model_nonzero, report.model_params


def _dense_params(name: str, width_factor: float) -> int:
    return sum(p.numel() for p in create_model(name, width_factor=width_factor).parameters())


def test_width_factor_scales_the_widths():
    assert _dense_params("slak_atto", 1.3) > 1.5 * _dense_params("slak_atto", 1.0)


@pytest.mark.slow
def test_slak_tiny_wide_and_sparse_matches_dense_narrow():
    nonzero, total = _nonzero_at_density("slak_tiny", 1.3, 0.6)
    dense_1x = _dense_params("slak_tiny", 1.0)
    # Official SLaK-T (1.3x, density 0.6 over 2-D/4-D weights): 50.70M dense, 30.47M non-zero.
    assert total == pytest.approx(50.70e6, rel=0.01)
    assert nonzero == pytest.approx(30.47e6, rel=0.01)
    assert nonzero == pytest.approx(dense_1x, rel=0.03)
