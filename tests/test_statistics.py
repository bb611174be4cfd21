"""Kaplan-Meier curves and medians, the log-rank statistic, Holm, Welch and Hedges' g against references.

References: lifelines (KaplanMeierFitter, logrank_test), exact rational arithmetic (fractions.Fraction),
hand calculations.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

from galbench.analysis import stats


def exact_km_median(times, reached):
    """Reference: the first event time at which the product-limit estimate, in fractions, is <= 1/2."""
    survival = Fraction(1)
    for time in sorted(set(t for t, r in zip(times, reached, strict=True) if r)):
        at_risk = sum(t >= time for t in times)
        events = sum(t == time and r for t, r in zip(times, reached, strict=True))
        survival *= Fraction(at_risk - events, at_risk)
        if survival <= Fraction(1, 2):
            return time
    return None


def random_censored_samples(count, seed):
    """Small samples with many ties (times from a few values) and random censoring."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n = int(rng.integers(1, 13))
        times = rng.choice([1.0, 2.0, 2.5, 3.0, 4.0, 7.0], size=n)
        reached = rng.random(n) < rng.uniform(0.2, 1.0)
        yield times, reached


def test_kaplan_meier_matches_exact_fractions_and_lifelines_on_1000_samples():
    disagreements_with_lifelines = 0
    for times, reached in random_censored_samples(1000, seed=1):
        km = stats.kaplan_meier(times, reached)
        exact = exact_km_median(times.tolist(), reached.tolist())
        if exact is None:
            assert km.median == stats.Bound(times.max(), "at_least", "not reached")
        else:
            assert km.median == stats.Bound(exact)
        fitter = KaplanMeierFitter().fit(times, reached)
        if (math.inf if exact is None else exact) != fitter.median_survival_time_:
            disagreements_with_lifelines += 1  # lifelines compares floats; the exact reference decides
        assert km.n == times.size and km.n_reached == reached.sum()
        if km.times:
            expected = fitter.survival_function_at_times(list(km.times)).to_numpy()
            np.testing.assert_allclose(km.survival, expected, atol=1e-12)
            assert km.reach_probability == pytest.approx(1 - expected[-1], abs=1e-12)
        else:
            assert km.reach_probability == 0
    assert disagreements_with_lifelines < 50


def test_kaplan_meier_median_of_exactly_one_half_from_the_review():
    # 0.8 * 0.75 * (2/3)... = 0.5000000000000001 in floats: the previous version said "not reached"
    km = stats.kaplan_meier([3, 3, 3.5, 3.5, 4] + [30] * 5, [True] * 5 + [False] * 5)
    assert km.median == stats.Bound(4.0)
    assert exact_km_median([3, 3, 3.5, 3.5, 4] + [30] * 5, [True] * 5 + [False] * 5) == 4


def test_kaplan_meier_with_censoring_matches_hand_product_limit():
    # S(1)=4/5; at t=2 one event and one censoring, 4 at risk: S=0.8*3/4=0.6; at t=3, 2 at risk: S=0.3
    km = stats.kaplan_meier([1, 2, 2, 3, 4], [True, True, False, True, False])
    assert km.survival == pytest.approx((0.8, 0.6, 0.3))
    assert km.median == stats.Bound(3.0) and km.reach_probability == pytest.approx(0.7)


def test_kaplan_meier_all_censored_is_open_at_the_largest_time():
    km = stats.kaplan_meier([8, 9, 8], [False, False, False])
    assert km.median == stats.Bound(9.0, "at_least", "not reached") and km.median.is_open
    assert km.reach_probability == 0 and km.n_reached == 0 and km.times == ()


def test_kaplan_meier_one_run():
    assert stats.kaplan_meier([5], [True]).median == stats.Bound(5.0)
    assert stats.kaplan_meier([5], [False]).median.side == "at_least"


def test_vectorised_medians_match_one_at_a_time():
    samples = list(random_censored_samples(300, seed=3))
    n = 7
    samples = [(t, r) for t, r in samples if t.size == n]
    times, reached = np.stack([t for t, _ in samples]), np.stack([r for _, r in samples])
    medians, found = stats._km_medians(times, reached)
    for (t, r), median, ok in zip(samples, medians, found, strict=True):
        exact = exact_km_median(t.tolist(), r.tolist())
        assert ok == (exact is not None) and median == (exact if ok else t.max())


def pure_logrank_chi2(times_a, reached_a, times_b, reached_b):
    """Reference: the log-rank chi-square written out over the distinct event times."""
    pooled = list(zip(times_a, reached_a, [1] * len(times_a), strict=True)) + \
        list(zip(times_b, reached_b, [0] * len(times_b), strict=True))
    observed_minus_expected = variance = 0.0
    for time in sorted({t for t, r, _ in pooled if r}):
        at_risk = [(t, r, a) for t, r, a in pooled if t >= time]
        n, n_a = len(at_risk), sum(a for _, _, a in at_risk)
        d = sum(1 for t, r, _ in at_risk if t == time and r)
        d_a = sum(1 for t, r, a in at_risk if t == time and r and a)
        observed_minus_expected += d_a - d * n_a / n
        if n > 1:
            variance += d * (n_a / n) * (1 - n_a / n) * (n - d) / (n - 1)
    return observed_minus_expected ** 2 / variance if variance > 0 else 0.0


def test_logrank_statistic_matches_lifelines_and_the_written_out_formula():
    rng = np.random.default_rng(4)
    for _ in range(50):
        n_a, n_b = rng.integers(2, 8, size=2)
        times_a, times_b = rng.integers(1, 6, n_a).astype(float), rng.integers(1, 6, n_b).astype(float)
        reached_a, reached_b = rng.random(n_a) < 0.7, rng.random(n_b) < 0.7
        if not (reached_a.any() or reached_b.any()):
            assert stats.logrank_statistic(times_a, reached_a, times_b, reached_b) is None
            continue
        ours = stats.logrank_statistic(times_a, reached_a, times_b, reached_b)
        assert ours == pytest.approx(pure_logrank_chi2(times_a, reached_a, times_b, reached_b), rel=1e-9, abs=1e-12)
        reference = logrank_test(times_a, times_b, reached_a, reached_b).test_statistic
        assert ours == pytest.approx(reference, rel=1e-7, abs=1e-10)


def test_logrank_by_hand():
    # events at 1,2 (arm a) and 3,4 (arm b): O-E = 2 - (1/2 + 1/3), V = 1/4 + 2/9
    chi2 = (2 - (0.5 + 1 / 3)) ** 2 / (0.25 + 2 / 9)
    assert stats.logrank_statistic([1, 2], [True, True], [3, 4], [True, True]) == pytest.approx(chi2, rel=1e-12)


def test_holm_by_hand():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> monotone 0.06
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(stats.holm([None, 0.2])[0]) and stats.holm([None, 0.2])[1] == pytest.approx(0.2)
    assert stats.holm([0.6, 0.7]).tolist() == [1.0, 1.0]


@given(st.lists(st.floats(min_value=0, max_value=1, allow_nan=False), min_size=1, max_size=30))
def test_holm_is_monotone_bounded_and_never_below_the_raw_p(p_values):
    adjusted = stats.holm(p_values)
    assert all(raw <= adj <= 1.0 for raw, adj in zip(p_values, adjusted, strict=True))
    order = np.argsort(p_values, kind="stable")
    assert all(np.diff(adjusted[order]) >= -1e-12)


def test_welch_and_hedges_against_hand_formulas():
    from scipy import stats as scipy_stats

    a, b = np.array([0.80, 0.82, 0.84]), np.array([0.70, 0.72, 0.74])
    t = 0.1 / math.sqrt(0.0004 / 3 + 0.0004 / 3)  # both variances 0.0004, Welch dof = 4
    assert stats._welch_p(a, b) == pytest.approx(2 * scipy_stats.t.sf(t, 4), rel=1e-6)
    assert stats.hedges_g(a, b) == pytest.approx(5 * (1 - 3 / 15))
    assert stats._welch_p(a, a.copy()) == pytest.approx(1.0)
    assert stats._welch_p(np.full(3, 0.8), np.full(3, 0.8)) == 1.0
    assert stats._welch_p(np.full(3, 0.8), np.full(3, 0.7)) is None  # infinite t: no meaningful p
    assert stats._welch_p(a[:2], b[:2]) is None  # fewer than MIN_SEEDS


def test_interquartile_mean_drops_the_outer_quarters():
    assert stats.interquartile_mean([1, 2, 3, 4, 100, 5, 6, 7]) == pytest.approx(4.5)
