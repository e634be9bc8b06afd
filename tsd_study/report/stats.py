"""Seed statistics: the mean of a few runs and its Student-t confidence interval."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """The mean of ``n`` finite values and its two-sided t-interval (NaN bounds when ``n`` < 2, NaN mean when 0)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.low)


def estimate(values: np.ndarray | list[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean and t-interval of the finite entries of ``values`` (NaN entries are runs without a number)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    n = len(finite)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(finite.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, 1)
    half_width = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1) * finite.std(ddof=1) / math.sqrt(n))
    return Estimate(mean, mean - half_width, mean + half_width, n)
