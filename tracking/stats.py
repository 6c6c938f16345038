"""Pure statistics of the analytics: proportion intervals, lift, saves, ROI, histograms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95 %: the 0.975 quantile of the standard normal.
Z95 = 1.959963984540054
DAYS_PER_YEAR = 365.25

# Latency histogram bucket edges in seconds: bucket 0 is [0, 60), bucket i is
# [edges[i-1], edges[i]), the last is [30 d, inf). Rollups add histograms bucket-wise,
# so percentiles over any range come from sums, at this resolution.
LATENCY_EDGES_SECONDS: tuple[int, ...] = (
    60,
    300,
    900,
    1800,
    3600,
    2 * 3600,
    4 * 3600,
    8 * 3600,
    12 * 3600,
    24 * 3600,
    2 * 86400,
    3 * 86400,
    5 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
)
BUCKETS = len(LATENCY_EDGES_SECONDS) + 1


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def wilson(successes: int, n: int, z: float = Z95) -> Interval | None:
    """Wilson score interval of a proportion; None when there is no trial.

    p = x/n; centre = (p + z^2/2n) / (1 + z^2/n);
    half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError("successes must lie in [0, n]")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def newcombe_difference(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> Interval | None:
    """p1 - p2 with Newcombe's hybrid score interval (his method 10), built from the two
    Wilson intervals (l1, u1), (l2, u2):
    low = d - sqrt((p1 - l1)^2 + (u2 - p2)^2), high = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)."""
    a, b = wilson(x1, n1, z), wilson(x2, n2, z)
    if a is None or b is None:
        return None
    d = a.estimate - b.estimate
    low = d - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = d + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(d, low, high)


def risk_ratio(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> Interval | None:
    """Risk ratio p1/p2 with the delta-method interval on its log:
    se(ln RR) = sqrt(1/x1 - 1/n1 + 1/x2 - 1/n2); RR * exp(+-z se).
    A zero count gets 0.5 added to every cell (Haldane-Anscombe), so the log exists."""
    if n1 <= 0 or n2 <= 0:
        return None
    if x1 == 0 or x2 == 0 or x1 == n1 or x2 == n2:
        x1, n1, x2, n2 = x1 + 0.5, n1 + 1, x2 + 0.5, n2 + 1
    rr = (x1 / n1) / (x2 / n2)
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
    return Interval(rr, rr * math.exp(-z * se), rr * math.exp(z * se))


def relative_reduction(
    x_treated: int, n_treated: int, x_control: int, n_control: int, z: float = Z95
) -> Interval | None:
    """1 - RR(treated vs control), interval (1 - RR_high, 1 - RR_low)."""
    rr = risk_ratio(x_treated, n_treated, x_control, n_control, z)
    if rr is None:
        return None
    return Interval(1 - rr.estimate, 1 - rr.high, 1 - rr.low)


def incremental_saves(absolute_reduction: Interval, n_treated: int) -> Interval:
    """Treated leads who would have churned without treatment: ARR x n_treated, the
    interval scaled the same way (n_treated is fixed, the uncertainty is in the ARR)."""
    return Interval(
        absolute_reduction.estimate * n_treated,
        absolute_reduction.low * n_treated,
        absolute_reduction.high * n_treated,
    )


def roi(revenue: float, cost: float) -> float | None:
    """(revenue - cost) / cost; None when nothing was spent (ROI is undefined)."""
    if cost <= 0:
        return None
    return (revenue - cost) / cost


def annualise(amount: float, days: float) -> float | None:
    """A flow over `days` days at the same rate over a year (365.25 days). Ratios such
    as rates and ROI do not annualise: they are the same over any span."""
    if days <= 0:
        return None
    return amount * DAYS_PER_YEAR / days


def bucket_of(seconds: float) -> int:
    """The histogram bucket of a latency (negative latencies count as 0)."""
    for index, edge in enumerate(LATENCY_EDGES_SECONDS):
        if seconds < edge:
            return index
    return len(LATENCY_EDGES_SECONDS)


def histogram_add(total: list[int], other: Sequence[int] | None) -> list[int]:
    """Bucket-wise sum; an empty histogram is all zeros."""
    if not total:
        total = [0] * BUCKETS
    for index, count in enumerate(other or ()):
        total[index] += count
    return total


def histogram_percentile(hist: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram, interpolated linearly inside its bucket;
    the open last bucket answers its lower edge. None for an empty histogram."""
    total = sum(hist or ())
    if total == 0:
        return None
    target = q * total
    seen = 0
    for index, count in enumerate(hist):
        if count and seen + count >= target:
            low = 0 if index == 0 else LATENCY_EDGES_SECONDS[index - 1]
            if index >= len(LATENCY_EDGES_SECONDS):
                return float(low)
            high = LATENCY_EDGES_SECONDS[index]
            return low + (high - low) * max(0.0, target - seen) / count
        seen += count
    return float(LATENCY_EDGES_SECONDS[-1])
