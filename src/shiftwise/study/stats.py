"""Mean, sample standard deviation and Student-t 95% interval of a few values (seeds).

The two-sided 95% quantile ``t(0.975, df)`` comes from a table for ``df`` 1..30 (the
standard values, to 6 digits) and, above 30, from the Cornish-Fisher expansion of ``t``
around the normal quantile (three terms; error below 1e-5 for df > 30).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Summary", "seeds_to_separate", "summarize", "t_quantile_975"]

_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
    2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
    2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip
_Z975 = 1.959963984540054
_Z80 = 0.8416212335729143  # the 0.8 quantile of the standard normal (80% power)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df >= 1`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df: expected an integer >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


@dataclass(frozen=True)
class Summary:
    """``n`` values: mean, standard deviation (ddof=1) and the 95% interval of the mean
    ``mean +- t(0.975, n-1) * std / sqrt(n)``; std and interval are NaN for one value."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def summarize(values: Sequence[float]) -> Summary:
    """The :class:`Summary` of ``values`` (at least one)."""
    n = len(values)
    if n == 0:
        raise ValueError("values: expected at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


# How many seeds a comparison needs: the power of a two-sample t test.


def t_test_power(noncentrality: float, df: int) -> float:
    """The power of a two-sided t test at the 5% level with ``df`` degrees of freedom when
    the true mean difference is ``noncentrality`` standard errors: ``P(|T| > t(0.975, df))``
    for ``T`` noncentral t, integrated over the chi-square of its denominator (trapezoids on
    4,001 points; error below 1e-4)."""
    c = t_quantile_975(df)
    top = df + 14 * math.sqrt(2 * df) + 60
    v = np.linspace(0, top, 4001)[1:]
    log_pdf = (df / 2 - 1) * np.log(v) - v / 2 - (df / 2) * math.log(2) - math.lgamma(df / 2)
    s = np.sqrt(v / df)
    tails = _normal_cdf(noncentrality - c * s) + _normal_cdf(-noncentrality - c * s)
    return float(
        np.trapezoid(np.concatenate([[0.0], tails * np.exp(log_pdf)]), np.concatenate([[0.0], v]))
    )


def seeds_to_separate(
    difference: float, std_a: float, std_b: float, power: float = 0.8, max_seeds: int = 1000
) -> int | None:
    """The seeds per configuration a two-sided two-sample t test at the 5% level needs to
    detect a true mean top-1 ``difference`` with probability ``power``, when the two
    configurations' seeds spread with standard deviations ``std_a`` and ``std_b``: the
    smallest ``n >= 2`` whose :func:`t_test_power` at noncentrality
    ``|difference| / sqrt((std_a**2 + std_b**2) / n)`` and ``2n - 2`` degrees of freedom
    reaches ``power`` (the standard tables: 17 seeds for a difference of one standard
    deviation, 64 for half of one). ``None`` when no ``n <= max_seeds`` does."""
    variance = std_a**2 + std_b**2
    if not all(math.isfinite(v) for v in (difference, variance)):
        raise ValueError("difference, std_a, std_b: expected finite numbers")
    if difference == 0:
        return None
    if variance == 0:
        return 2

    def enough(n: int) -> bool:
        return t_test_power(abs(difference) / math.sqrt(variance / n), 2 * n - 2) >= power

    if not enough(max_seeds):
        return None
    low, high = 1, max_seeds  # enough(high), and n = 1 has no test
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high
