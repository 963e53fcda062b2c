"""Reading results over seeds: means with t-intervals, paired differences, verdicts.

A result over seeds is reported as its mean and a 95 % Student-t interval,
mean ± t(n−1) · s / √n (s the standard deviation over the n seeds, ddof 1).

The sign convention, for the whole book. A *difference* is always ``a − b``,
paired by seed (both runs of a seed share their initial weights, data order
and permutations, so the pairing removes the luck they share). Its interval
*supports* "a above b" when its low end is above 0, "a below b" when its high
end is below 0, and neither when it contains 0: then the seeds cannot tell the
two apart, and differences up to the interval's ends remain possible. For example::

    diff = paired_difference(ewc_accuracies, l2_accuracies)   # one per seed
    verdict(diff, "EWC ends above L2", "EWC ends below L2", "not resolved")
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ewcbook.checks import integer, real


class Interval(NamedTuple):
    """A mean over seeds and the ends of its interval; unpacks as ``mean, low, high``."""

    mean: float
    low: float
    high: float

    @property
    def sign(self) -> int:
        """+1 if the interval lies above 0, −1 if below, 0 if it contains 0 (see the module's convention)."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def t_quantile(df: int, q: float = 0.975) -> float:
    """The ``q`` quantile of Student's t distribution with ``df`` degrees of freedom.

    Computed with NumPy alone: bisection on the CDF, whose density is
    integrated by Simpson's rule (accurate to about 1e-6; e.g. 2.262 for
    df = 9, 12.706 for df = 1, 1.960 in the limit).
    """
    df = integer(df, "df", minimum=1)
    q = real(q, "q", low=0.5, high=1.0, open_low=True, open_high=True)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x):  # 0.5 + ∫_0^x density, Simpson's rule on 4000 intervals
        u = np.linspace(0.0, x, 4001)
        f = np.exp(log_c - (df + 1) / 2 * np.log1p(u * u / df))
        return 0.5 + (u[1] - u[0]) / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    low, high = 0.0, 1.0
    while cdf(high) < q:
        low, high = high, 2 * high
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < q else (low, mid)
    return (low + high) / 2


def mean_interval(values, level: float = 0.95) -> Interval:
    """The mean of ``values`` (one per seed) and its ``level`` Student-t interval.

    Raises:
        ValueError: if ``values`` is not a 1-d sequence of at least 2 finite
            numbers (one value has no interval).
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError(f"values must be a 1-d sequence of at least 2 numbers, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite")
    level = real(level, "level", low=0.0, high=1.0, open_low=True, open_high=True)
    mean = float(values.mean())
    half = t_quantile(len(values) - 1, 0.5 + level / 2) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half)


def paired_difference(a, b, level: float = 0.95) -> Interval:
    """Mean and interval of ``a − b``, seed by seed (``a[k]`` and ``b[k]`` share seed k)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up seed by seed, got shapes {a.shape} and {b.shape}")
    return mean_interval(a - b, level)


def unpaired_difference(a, b, level: float = 0.95) -> Interval:
    """Mean and Welch interval of ``mean(a) − mean(b)`` for runs that do not pair up
    (other settings, other seeds); the degrees of freedom (Welch-Satterthwaite)
    rounded down, which widens the interval a little."""
    a, b = (np.asarray(x, np.float64) for x in (a, b))
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 1 or len(x) < 2 or not np.all(np.isfinite(x)):
            raise ValueError(f"{name} must be a 1-d sequence of at least 2 finite numbers, got {x!r:.80}")
    level = real(level, "level", low=0.0, high=1.0, open_low=True, open_high=True)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = float(a.mean() - b.mean())
    if va + vb == 0:
        return Interval(diff, diff, diff)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(max(1, int(df)), 0.5 + level / 2) * math.sqrt(va + vb)
    return Interval(diff, diff - half, diff + half)


def resolved_sign(interval, margin: float = 0.0) -> int:
    """+1 if the interval's low end lies above ``margin``, −1 if its high end lies below −``margin``, else 0.

    With ``margin`` = 0 this is :attr:`Interval.sign`. A margin > 0 is the rule
    for a verdict that must hold on another CPU: another float path moves every
    run's last digits and, through training, its accuracies a little, so an end
    within that much of 0 could cross it; such a comparison counts as not resolved.
    """
    margin = real(margin, "margin", low=0.0)
    _, low, high = Interval(*(float(x) for x in interval))
    return 1 if low > margin else -1 if high < -margin else 0


def verdict(interval, above: str, below: str, unclear: str, margin: float = 0.0) -> str:
    """``above``, ``below`` or ``unclear``, as the interval of a difference lies above 0,
    below 0, or across it (with ``margin``: see :func:`resolved_sign`). Glue the result:
    re-run with other seeds, the prose and the numbers stay in agreement."""
    return {1: above, -1: below, 0: unclear}[resolved_sign(interval, margin)]
