"""ERK / uniform / SNIP densities, unit rounding, the cosine prune rate and sparsity reports."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftwise.sparse import (
    Masking,
    cosine_prune_rate,
    erk_densities,
    snip_keep,
    sparsity_report,
    unit_counts,
)


def test_cosine_prune_rate_matches_the_official_schedule():
    # Values measured on the official CosineDecay (reference/slak_details.md 3.4).
    assert cosine_prune_rate(0, 93600, 0.5) == pytest.approx(0.5)
    assert cosine_prune_rate(2000, 93600, 0.5) == pytest.approx(0.4994, abs=1e-4)
    assert cosine_prune_rate(46800, 93600, 0.5) == pytest.approx(0.2525, abs=1e-4)
    assert cosine_prune_rate(92000, 93600, 0.5) == pytest.approx(0.00536, abs=1e-5)
    assert cosine_prune_rate(10**6, 93600, 0.5) == pytest.approx(0.005)


def test_erk_makes_small_layers_dense_and_meets_the_budget():
    shapes = [(3, 3, 3, 3), (64, 64, 3, 3), (128, 64), (1000, 128)]
    numels = [math.prod(s) for s in shapes]
    densities = erk_densities(shapes, numels, 0.3)
    assert densities[0] == 1.0
    assert all(0 < d <= 1 for d in densities)
    assert densities[1] < densities[2] or densities[2] == 1.0
    kept = sum(d * n for d, n in zip(densities, numels, strict=True))
    assert kept == pytest.approx(0.3 * sum(numels))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 64), st.integers(1, 64)), min_size=1, max_size=6),
    st.floats(0.05, 1.0),
)
def test_erk_densities_are_valid_for_any_shapes(shapes, density):
    numels = [math.prod(s) for s in shapes]
    densities = erk_densities(shapes, numels, density)
    assert all(0 < d <= 1 + 1e-12 for d in densities)
    kept = sum(d * n for d, n in zip(densities, numels, strict=True))
    assert kept == pytest.approx(density * sum(numels), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 1), st.integers(1, 200), st.sampled_from([1, 9, 18])),
        min_size=1,
        max_size=6,
    )
)
def test_unit_counts_stay_within_half_a_unit_of_the_budget(layers):
    densities, n_units, sizes = zip(*layers, strict=True)
    counts = unit_counts(densities, n_units, sizes)
    assert all(0 <= c <= n for c, n in zip(counts, n_units, strict=True))
    budget = sum(d * n * s for d, n, s in layers)
    kept = sum(c * s for c, s in zip(counts, sizes, strict=True))
    assert abs(kept - budget) <= max(sizes) / 2 * len(layers)
    assert abs(kept - budget) <= max(sizes) or len(layers) > 1


def test_snip_keep_ranks_units_globally_by_score_and_size():
    scores = [torch.tensor([5.0, 1.0, 3.0]), torch.tensor([4.0, 2.0])]
    keep = snip_keep(scores, [1, 2], density=5 / 7)  # budget 5 entries
    assert keep[0].tolist() == [True, False, True]
    assert keep[1].tolist() == [True, False]


def test_report_from_masking_and_from_model(tiny_net):
    optimizer = torch.optim.SGD(tiny_net.parameters(), lr=0.1)
    masking = Masking(
        tiny_net, optimizer, density=0.5, init="uniform", total_steps=10, granularity="group"
    )
    report = sparsity_report(masking)
    assert report.density == pytest.approx(masking.density())
    assert [s.stage for s in report.stages] == ["stage0", "stage1"]
    assert [s.fraction for s in report.stages] == [0.5, 0.5]
    assert {layer.name: layer.density for layer in report.layers} == pytest.approx(
        masking.layer_densities()
    )
    from_model = sparsity_report(tiny_net)
    assert [s.fraction for s in from_model.stages] == [0.5, 0.5]
    assert from_model.model_nonzero < from_model.model_params
    text = report.format()
    assert "stage0" in text and "stages.1.0.paths" in text
    as_dict = report.to_dict()
    assert as_dict["stages"][0]["fraction"] == 0.5
    with pytest.raises(TypeError, match="source"):
        sparsity_report("model")
