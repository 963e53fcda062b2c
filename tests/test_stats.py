"""ewcbook.stats: Student-t quantiles and intervals, paired differences, verdicts and their sign convention."""

import math

import numpy as np
import pytest

import ewcbook as eb
from ewcbook import stats


@pytest.mark.parametrize(
    "df, expected",  # two-sided 95 % quantiles from any t table
    [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (19, 2.093), (29, 2.045), (10_000, 1.960)],
)
def test_t_quantile_matches_the_table(df, expected):
    assert stats.t_quantile(df) == pytest.approx(expected, abs=1e-3)


def test_t_quantile_other_levels_and_errors():
    assert stats.t_quantile(9, 0.995) == pytest.approx(3.250, abs=1e-3)
    with pytest.raises(ValueError, match="df"):
        stats.t_quantile(0)
    with pytest.raises(TypeError, match="df"):
        stats.t_quantile(2.0)
    with pytest.raises(ValueError, match="q"):
        stats.t_quantile(5, 0.4)


def test_interval_is_mean_plus_minus_t_times_standard_error():
    mean, low, high = eb.mean_interval([1.0, 2.0, 3.0])
    half = stats.t_quantile(2) * 1.0 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half), rel=1e-12)
    assert eb.mean_interval([0.90, 0.92, 0.94]).mean == pytest.approx(0.92)
    assert eb.mean_interval([1.0, 2.0, 3.0], level=0.99).high > high
    for bad, message in (([1.0], "at least 2"), ([], "at least 2"), ([[1.0, 2.0]], "1-d"), ([0.1, np.nan], "finite")):
        with pytest.raises(ValueError, match=message):
            eb.mean_interval(bad)


def test_paired_difference_removes_what_the_seeds_share():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.8, 10)  # a large spread between seeds, a small, steady difference
    a = base + 0.01 + rng.normal(0, 0.002, 10)
    paired = eb.paired_difference(a, base)
    unpaired_width = 2 * stats.t_quantile(9) * np.sqrt(a.var(ddof=1) / 10 + base.var(ddof=1) / 10)
    assert paired.low > 0 and paired.high - paired.low < unpaired_width / 10
    assert paired == eb.mean_interval(a - base)
    with pytest.raises(ValueError, match="pair up"):
        eb.paired_difference([1.0, 2.0], [1.0])


def test_the_sign_convention_and_the_verdict():
    assert stats.Interval(0.05, 0.01, 0.09).sign == 1
    assert stats.Interval(-0.05, -0.09, -0.01).sign == -1
    assert stats.Interval(0.0, -0.1, 0.1).sign == 0
    assert stats.Interval(0.01, 0.0, 0.02).sign == 0  # an end at 0 does not exclude 0
    assert eb.verdict((0.05, 0.01, 0.09), "up", "down", "?") == "up"
    assert eb.verdict([-0.2, -0.3, -0.1], "up", "down", "?") == "down"
    assert eb.verdict(eb.paired_difference([0.9, 0.8, 0.7], [0.7, 0.9, 0.8]), "up", "down", "?") == "?"


def test_unpaired_difference_is_welchs_interval():
    a, b = [0.60, 0.62, 0.58, 0.61, 0.59], [0.76, 0.77]
    mean, low, high = eb.unpaired_difference(a, b)
    va, vb = np.var(a, ddof=1) / 5, np.var(b, ddof=1) / 2
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 1)  # Welch-Satterthwaite
    assert mean == pytest.approx(np.mean(a) - np.mean(b))
    assert high - mean == pytest.approx(eb.stats.t_quantile(int(df)) * np.sqrt(va + vb))
    assert low < mean < high
    # equal spreads and sizes: Welch's df is 2(n-1), the pooled t's
    same = eb.unpaired_difference([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert same.high - same.mean == pytest.approx(eb.stats.t_quantile(4) * np.sqrt(2 / 3))
    with pytest.raises(ValueError, match="b must be"):
        eb.unpaired_difference(a, [0.7])
