"""The A/B verdict's statistics (bench/paired.py): the signed-rank interval and the verdict rules."""
import math
import random

import pytest

from bench.paired import log_ratios, min_rounds_for, signed_rank_interval, verdict


@pytest.mark.parametrize("n, lower_rank", [(6, 1), (10, 9), (15, 26), (20, 53), (30, 138)])
def test_interval_ranks_match_wilcoxon_tables(n, lower_rank):
    # two-sided 5 % critical values of W (Wilcoxon signed-rank tables): 0, 8, 25, 52, 137; the interval's
    # bounds are the (W + 1)-th smallest and largest Walsh averages
    d = [float(i) for i in range(n)]
    walsh = sorted((d[i] + d[j]) / 2 for i in range(n) for j in range(i, n))
    _, lo, hi = signed_rank_interval(d, 0.95)
    assert (lo, hi) == (walsh[lower_rank - 1], walsh[-lower_rank])


def test_too_few_rounds_have_no_interval():
    assert min_rounds_for(0.95) == 6 and min_rounds_for(0.99) == 8
    est, lo, hi = signed_rank_interval([0.1, 0.2, 0.3, 0.1, 0.2], 0.95)
    assert lo is None and hi is None and est == pytest.approx(0.2)
    v = verdict([0.1] * 5, 0.02)
    assert v.verdict == "inconclusive" and v.rounds_needed == 6


def test_interval_covers_the_centre_at_its_confidence():
    rng = random.Random(1)
    trials, covered = 2000, 0
    for _ in range(trials):
        d = [rng.gauss(0.03, 0.1) for _ in range(15)]
        _, lo, hi = signed_rank_interval(d)
        covered += lo <= 0.03 <= hi
    assert 0.93 <= covered / trials <= 0.98  # exact 95.2 % for n = 15 (k = 26), whatever the spread


def test_one_wild_round_moves_the_interval_by_a_rank_not_by_its_size():
    rng = random.Random(2)
    d = [rng.gauss(0.0, 0.01) for _ in range(20)]
    _, lo, hi = signed_rank_interval(d)
    _, lo2, hi2 = signed_rank_interval(d[:-1] + [5.0])  # a round hit by a 150x burst of load
    assert hi2 - hi < 0.01 and lo2 - lo < 0.01


@pytest.mark.parametrize("centre, expected", [(0.10, "regression"), (-0.10, "faster"), (0.0, "unchanged")])
def test_verdicts(centre, expected):
    rng = random.Random(3)
    d = [centre + rng.gauss(0, 0.01) for _ in range(30)]
    v = verdict(d, 0.02)
    assert v.verdict == expected and v.decided
    assert v.low <= v.ratio <= v.high and v.ratio == pytest.approx(math.exp(centre), rel=0.01)


def test_an_interval_across_the_tolerance_is_inconclusive_with_the_rounds_it_needs():
    rng = random.Random(4)
    d = [0.05 + rng.gauss(0, 0.2) for _ in range(20)]  # 5 % slower, but noisy
    v = verdict(d, 0.02)
    assert v.verdict == "inconclusive" and v.rounds_needed > 20
    assert "inconclusive at ±2%" in v.describe() and str(v.rounds_needed) in v.describe()
    # the same rounds seen again until there are as many as it asked for (centre and spread kept): decided
    more = d * (v.rounds_needed // len(d) + 1)
    assert verdict(more, 0.02).verdict == "regression"


def test_bad_inputs():
    with pytest.raises(ValueError, match="tolerance must be > 0"):
        verdict([0.0] * 10, 0)
    with pytest.raises(ValueError, match="differ in length"):
        log_ratios([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least one value"):
        signed_rank_interval([])


def test_segments_count_once():
    from bench.paired import segment_means

    assert segment_means([1.0, 3.0, 2.0, 4.0, 9.0], 2) == [2.0, 3.0, 9.0]  # the last segment may be short
    assert segment_means([1.0, 2.0], 0) == [1.0, 2.0] == segment_means([1.0, 2.0], 1)
    # a bias shared by a segment's rounds widens the interval over segments, not the one over rounds
    import random

    rng = random.Random(3)
    x = [b + rng.gauss(0, 0.01) for b in (rng.gauss(0, 0.05) for _ in range(12)) for _ in range(5)]
    rounds, segments = verdict(x, 0.02), verdict(segment_means(x, 5), 0.02)
    assert segments.high - segments.low > 1.5 * (rounds.high - rounds.low)
