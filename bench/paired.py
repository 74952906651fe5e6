"""The A/B speed verdict: a paired ratio of two revisions' times, its interval, and what it says.

Each round times one repeat of revision A and one of B back to back (in random order), so the drift of a
shared machine's speed (other jobs, frequency, the cache) hits both alike; what is compared is the
per-round log-ratio d = ln(t_B / t_A). The estimate is the Hodges-Lehmann estimator of d (the median of
the Walsh averages (d_i + d_j) / 2, i <= j) and the interval the one that inverts Wilcoxon's signed-rank
test (Hollander & Wolfe, Nonparametric Statistical Methods, ch. 3), from the exact null distribution of
the statistic. Why a rank method rather than a bootstrap: with the 10-30 rounds a one-minute budget
allows, a percentile bootstrap of the median undercovers and its bounds move with the resampling seed;
the signed-rank interval has its stated coverage for any continuous distribution of d symmetric about
its centre, needs no resampling, and a round hit by a burst of load moves it by one rank, not by the
burst's size. The ratio is exp of the estimate; a time ratio > 1 means B is slower.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

__all__ = ["signed_rank_interval", "Verdict", "verdict", "min_rounds_for", "log_ratios"]


@lru_cache(maxsize=None)
def _null_counts(n: int) -> Tuple[int, ...]:
    """How many of the 2^n sign patterns give each value 0..n(n+1)/2 of the signed-rank statistic W+."""
    counts = [1]
    for rank in range(1, n + 1):
        grown = counts + [0] * rank
        for w, c in enumerate(counts):
            grown[w + rank] += c
        counts = grown
    return tuple(counts)


def _rank_offset(n: int, confidence: float) -> int:
    """k: the interval runs from the k-th smallest Walsh average to the k-th largest; 0 when n is too small
    for that confidence at all (P(W+ = 0) = 2^-n is above the tail it may leave)."""
    tail = (1 - confidence) / 2
    counts, total, k, below = _null_counts(n), 2 ** n, 0, 0
    while below + counts[k] <= tail * total:  # P(W+ <= k) <= tail: the k+1-th Walsh average may be a bound
        below += counts[k]
        k += 1
    return k


def min_rounds_for(confidence: float) -> int:
    """The fewest rounds for which a signed-rank interval at `confidence` exists (6 at 95 %, 8 at 99 %)."""
    n = 1
    while _rank_offset(n, confidence) == 0:
        n += 1
    return n


def signed_rank_interval(d: Sequence[float], confidence: float = 0.95) -> Tuple[float, Optional[float], Optional[float]]:
    """(Hodges-Lehmann estimate, lower, upper) of the centre of `d`; the bounds are None when there are
    too few values for an interval at `confidence`."""
    if not d:
        raise ValueError("signed_rank_interval needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    walsh = sorted((d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d)))
    m = len(walsh)
    estimate = (walsh[(m - 1) // 2] + walsh[m // 2]) / 2
    k = _rank_offset(len(d), confidence)
    if k == 0:
        return estimate, None, None
    return estimate, walsh[k - 1], walsh[m - k]


@dataclass(frozen=True)
class Verdict:
    """One cell's speed verdict. `ratio`, `low`, `high`: B's time over A's (> 1: B slower)."""
    verdict: str              # "regression" | "faster" | "unchanged" | "inconclusive"
    ratio: float
    low: Optional[float]
    high: Optional[float]
    rounds: int
    tolerance: float
    rounds_needed: Optional[int] = None   # for "inconclusive": about how many rounds would decide it

    @property
    def decided(self) -> bool:
        return self.verdict != "inconclusive"

    def describe(self) -> str:
        band = f"[{self.low:.3f}, {self.high:.3f}]" if self.low is not None else "[no interval yet]"
        text = f"time ×{self.ratio:.3f} {band} over {self.rounds} rounds"
        if self.verdict == "inconclusive":
            more = f"about {self.rounds_needed}" if self.rounds_needed else "many more"
            text += f"; inconclusive at ±{100 * self.tolerance:g}%: {more} rounds would decide it"
        return text


def verdict(log_ratios: Sequence[float], tolerance: float, confidence: float = 0.95) -> Verdict:
    """A regression only when the whole interval lies above 1 + tolerance; "faster" when it lies below
    1 / (1 + tolerance); "unchanged" when it lies inside that band; otherwise inconclusive, with the
    rounds an interval shrinking as 1/sqrt(n) would need to leave the nearest boundary out."""
    if not tolerance > 0:
        raise ValueError(f"the speed tolerance must be > 0 (a fraction, e.g. 0.02), got {tolerance}")
    est, lo, hi = signed_rank_interval(list(log_ratios), confidence)
    n, bound = len(log_ratios), math.log1p(tolerance)
    ratio = math.exp(est)
    if lo is None:
        return Verdict("inconclusive", ratio, None, None, n, tolerance, min_rounds_for(confidence))
    box = dict(ratio=ratio, low=math.exp(lo), high=math.exp(hi), rounds=n, tolerance=tolerance)
    if lo > bound:
        return Verdict("regression", **box)
    if hi < -bound:
        return Verdict("faster", **box)
    if -bound < lo and hi < bound:
        return Verdict("unchanged", **box)
    return Verdict("inconclusive", rounds_needed=_rounds_needed(est, lo, hi, n, bound), **box)


def _rounds_needed(est: float, lo: float, hi: float, n: int, bound: float) -> Optional[int]:
    half = (hi - lo) / 2
    room = abs(abs(est) - bound) if abs(est) > bound else bound - abs(est)
    if room < 1e-3 * bound or half <= 0:  # the estimate sits on the boundary: no finite number of rounds decides it
        return None
    return max(n + 1, math.ceil(n * (half / room) ** 2))


def segment_means(values: Sequence[float], size: int) -> List[float]:
    """Means of consecutive runs of `size` values (the last run may be shorter): one value per segment of an
    A/B whose memory is renewed between segments (`bench.ab`), so that what a segment shares (its pages, a
    stretch of machine load) counts once, not once per round. `size` <= 1 returns the values."""
    if size <= 1:
        return list(values)
    return [sum(values[i:i + size]) / len(values[i:i + size]) for i in range(0, len(values), size)]


def log_ratios(a: List[float], b: List[float]) -> List[float]:
    """ln(b_i / a_i) of paired timings."""
    if len(a) != len(b):
        raise ValueError(f"paired timings differ in length: {len(a)} vs {len(b)}")
    return [math.log(y / x) for x, y in zip(a, b)]
