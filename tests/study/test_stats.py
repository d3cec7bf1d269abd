"""The aggregation math against numpy: mean, std (ddof=1), Student-t 95% interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftwise.study import seeds_to_separate, summarize, summary_rows, t_quantile_975
from shiftwise.study.grid import parse_grid
from shiftwise.study.stats import t_test_power

# t(0.975, df) to 6 digits (standard tables).
KNOWN_T = {1: 12.706205, 2: 4.302653, 5: 2.570582, 10: 2.228139, 30: 2.042272, 31: 2.039513,
           40: 2.021075, 60: 2.000298, 120: 1.979930, 1000: 1.962339}  # fmt: skip


@pytest.mark.parametrize(("df", "expected"), KNOWN_T.items())
def test_t_quantile_matches_tables(df: int, expected: float) -> None:
    assert t_quantile_975(df) == pytest.approx(expected, abs=2e-6)


def test_t_quantile_refuses_zero_degrees() -> None:
    with pytest.raises(ValueError, match="df"):
        t_quantile_975(0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=2, max_size=12))
def test_summary_equals_numpy(values: list[float]) -> None:
    array = np.array(values)
    summary = summarize(values)
    half = t_quantile_975(len(values) - 1) * array.std(ddof=1) / math.sqrt(len(values))
    assert summary.n == len(values)
    assert summary.mean == pytest.approx(array.mean(), abs=1e-9)
    assert summary.std == pytest.approx(array.std(ddof=1), abs=1e-9)
    assert summary.ci_low == pytest.approx(array.mean() - half, abs=1e-9)
    assert summary.ci_high == pytest.approx(array.mean() + half, abs=1e-9)


def test_known_three_seeds() -> None:
    summary = summarize([80.0, 82.0, 84.0])
    assert (summary.mean, summary.std) == (82.0, 2.0)
    assert summary.ci_high - summary.mean == pytest.approx(4.302653 * 2.0 / math.sqrt(3))


def test_one_value_has_no_spread() -> None:
    summary = summarize([5.0])
    assert summary.mean == 5.0 and math.isnan(summary.std) and math.isnan(summary.ci_low)


def _run(entry: str, seed: int, top1: float, seconds: float) -> dict:
    return {
        "entry": entry, "seed": seed, "model": "sw_atto", "data": "digits", "epochs": 2,
        "top1": top1, "training_seconds": seconds, "images_per_second": 1000 / seconds,
        "params": 10.0, "macs": 20.0, "stages": [], "val_top1": [top1 - 10, top1],
    }  # fmt: skip


def test_summary_rows_group_runs_per_entry_in_grid_order() -> None:
    grid = parse_grid(
        {"seeds": [0, 1, 2], "runs": [{"name": "b", "model": "sw_atto"}, {"name": "a"}]}
    )
    results = [_run("a", 0, 50.0, 1.0)] + [
        _run("b", s, v, t) for s, v, t in [(0, 70.0, 2.0), (1, 71.5, 4.0), (2, 73.0, 3.0)]
    ]
    rows = summary_rows(grid, results)
    assert [row["entry"] for row in rows] == ["b", "a"]
    b = rows[0]
    assert b["top1_mean"] == pytest.approx(np.mean([70, 71.5, 73]))
    assert b["top1_std"] == pytest.approx(np.std([70, 71.5, 73], ddof=1))
    assert b["training_seconds_mean"] == pytest.approx(3.0)
    assert b["images_per_second_mean"] == pytest.approx(np.mean([500, 250, 1000 / 3]))
    assert b["seeds"] == [0, 1, 2] and rows[1]["n"] == 1
    assert [e["mean"] for e in b["top1_by_epoch"]] == pytest.approx([61.5, 71.5])


# Seeds per group of a two-sample t test (two-sided 5%, power 80%) from the standard
# tables (Cohen 1988, Table 2.4.1; exact noncentral-t values): effect size d -> n.
KNOWN_N = {2.0: 6, 1.5: 9, 1.0: 17, 0.8: 26, 0.5: 64, 0.2: 394}


@pytest.mark.parametrize(("effect", "expected"), KNOWN_N.items())
def test_seeds_to_separate_matches_power_tables(effect: float, expected: int) -> None:
    assert seeds_to_separate(effect * 3.0, 3.0, 3.0) == expected


def test_power_is_the_level_without_difference_and_grows_with_it() -> None:
    assert t_test_power(0.0, 4) == pytest.approx(0.05, abs=1e-4)
    # large df: the normal approximation 1 - Phi(1.96 - 2.8) + Phi(-1.96 - 2.8) = 0.7995
    assert t_test_power(2.8, 2000) == pytest.approx(0.7995, abs=2e-3)
    assert t_test_power(1.0, 4) < t_test_power(2.0, 4) < t_test_power(2.0, 40)


def test_seeds_to_separate_uses_both_spreads_and_bounds() -> None:
    # the variance of the difference is what matters: (3, 4) is one pooled std of 5/sqrt(2)
    assert seeds_to_separate(5.0, 3.0, 4.0) == seeds_to_separate(5.0, 5 / 2**0.5, 5 / 2**0.5)
    assert seeds_to_separate(0.0, 1.0, 1.0) is None
    assert seeds_to_separate(0.01, 10.0, 10.0, max_seeds=100) is None
    assert seeds_to_separate(1.0, 0.0, 0.0) == 2
    with pytest.raises(ValueError, match="finite"):
        seeds_to_separate(1.0, math.nan, 1.0)
