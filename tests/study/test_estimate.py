"""The study's cost model: probe timings give back the costs that made them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shiftwise.study.estimate import probe_cost

seconds = st.floats(0.0, 10.0)


def _timed(steps: int, epochs: int, step: float, fixed: float, outside: float, overhead: float):
    epoch = fixed + (steps + 1 / 3) * step  # one validation batch: a third of a step
    return steps, [epoch] * epochs, overhead + epochs * (outside + epoch)


@given(st.floats(1e-3, 5.0), seconds, seconds, seconds)
def test_probe_cost_recovers_the_costs_of_exact_timings(step, fixed, outside, overhead) -> None:
    cost = probe_cost(
        _timed(1, 1, step, fixed, outside, overhead),
        _timed(4, 1, step, fixed, outside, overhead),
        _timed(1, 2, step, fixed, outside, overhead),
    )
    assert cost.step == pytest.approx(step, rel=1e-9, abs=1e-9)
    assert cost.epoch_fixed == pytest.approx(fixed, rel=1e-9, abs=1e-8)
    assert cost.epoch_outside == pytest.approx(outside, rel=1e-9, abs=1e-8)
    assert cost.overhead == pytest.approx(overhead, rel=1e-9, abs=1e-8)
    assert cost.source == "probe"


def test_run_seconds_counts_every_epoch_with_its_fixed_parts() -> None:
    class Plan:
        steps, val_batches = 10, 3

    cost = probe_cost(
        _timed(1, 1, 0.5, 2.0, 1.0, 7.0),
        _timed(4, 1, 0.5, 2.0, 1.0, 7.0),
        _timed(1, 2, 0.5, 2.0, 1.0, 7.0),
    )
    assert cost.epoch_seconds(Plan) == pytest.approx(2.0 + (10 + 1) * 0.5)
    assert cost.run_seconds(Plan, 3) == pytest.approx(7.0 + 3 * (1.0 + 7.5))


def test_noisy_probes_never_give_negative_costs() -> None:
    # the 4-step epoch measured faster than the 1-step one, the two-epoch run cheaper
    # outside its epochs than the one-epoch runs: no part below zero
    cost = probe_cost((1, [2.0], 3.0), (4, [1.8], 2.9), (1, [0.5, 0.5], 1.2))
    assert cost.step == pytest.approx((2.0 + 1.8) / 2 / (4 / 3))
    assert cost.epoch_fixed == 0.0 and cost.epoch_outside == 0.0
    assert cost.overhead == pytest.approx(((3.0 - 2.0) + (2.9 - 1.8)) / 2)


def test_one_probe_size_has_no_fixed_epoch_part() -> None:
    # a data set of one step per epoch: both one-epoch probes have 1 step
    cost = probe_cost((1, [1.0], 2.0), (1, [1.2], 2.2), (1, [1.0, 1.0], 3.5))
    assert cost.step == pytest.approx(1.1 / (4 / 3)) and cost.epoch_fixed == 0.0
    assert cost.epoch_outside == pytest.approx(1.5 - 1.0)
