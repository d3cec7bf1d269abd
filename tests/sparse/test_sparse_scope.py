"""One sparse scope: masking, complexity counts and weight decay agree on every model."""

from __future__ import annotations

import pytest

import shiftwise
from shiftwise.analysis.complexity import count_params
from shiftwise.layers.sparse_scope import sparse_scope
from shiftwise.models.blocks import GRN
from shiftwise.sparse.targets import select_targets


@pytest.mark.parametrize("name", shiftwise.list_models())
def test_masking_complexity_and_weight_decay_share_one_scope(name):
    model = shiftwise.create_model(name, width_factor=0.125)
    scope = sparse_scope(model)
    masked = {n for target in select_targets(model, "all") for n in target.param_names}
    assert masked == set(scope)
    # complexity: at density d exactly the scope's entries scale by d
    dense, sparse = count_params(model)[-1].params, count_params(model, density=0.25)[-1].params
    in_scope = sum(p.numel() for p in scope.values())
    assert dense - sparse == pytest.approx(0.75 * in_scope, rel=1e-12)
    # weight decay: every multi-dimensional parameter outside the scope is exempt
    outside = {n for n, p in model.named_parameters() if p.ndim > 1 and n not in scope}
    assert model.no_weight_decay() == outside
    has_grn = any(isinstance(m, GRN) for m in model.modules())
    assert outside == {n for n in outside if ".grn." in n} and bool(outside) == has_grn


def test_grn_scales_are_outside_the_scope():
    model = shiftwise.create_model("sw_atto", width_factor=0.25)
    names = set(sparse_scope(model))
    grn = [n for n, _ in model.named_parameters() if ".grn." in n]
    assert grn and not names & set(grn)
    assert "stages.0.blocks.0.fc1.weight" in names
