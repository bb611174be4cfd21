"""Permutation log-rank, permutation mean difference and McNemar against brute force, statsmodels and the null.

Every exact p-value is checked against a plain loop over itertools.combinations written here; the
Monte-Carlo path against the exact answer; the size of the tests by simulation under the null.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from galbench.analysis import stats
from tests.test_statistics import pure_logrank_chi2


def brute_force_logrank_p(times_a, reached_a, times_b, reached_b):
    """Reference: every relabelling of the pooled runs, the written-out log-rank chi-square of each."""
    times, reached = list(times_a) + list(times_b), list(reached_a) + list(reached_b)
    n, n_a = len(times), len(times_a)
    observed = pure_logrank_chi2(times_a, reached_a, times_b, reached_b)
    count = extreme = 0
    for chosen in itertools.combinations(range(n), n_a):
        rest = [i for i in range(n) if i not in chosen]
        value = pure_logrank_chi2([times[i] for i in chosen], [reached[i] for i in chosen],
                                  [times[i] for i in rest], [reached[i] for i in rest])
        count += 1
        extreme += value >= observed - 1e-9 * max(observed, 1)
    return Fraction(extreme, count)


def brute_force_mean_difference_p(a, b):
    """Reference: every relabelling, the mean difference in exact fractions."""
    pooled = [Fraction(x) for x in list(a) + list(b)]
    n_a, n_b = len(a), len(b)

    def difference(chosen):
        inside = sum(pooled[i] for i in chosen)
        return abs(inside / n_a - (sum(pooled) - inside) / n_b)

    observed = difference(range(n_a))
    values = [difference(chosen) for chosen in itertools.combinations(range(len(pooled)), n_a)]
    return Fraction(sum(v >= observed for v in values), len(values))


def test_complete_separation_3_vs_3_cannot_go_below_one_tenth():
    test = stats.permutation_logrank([1, 2, 3], [True] * 3, [4, 5, 6], [True] * 3)
    assert test.exact and test.resamples == 20
    assert test.p_value == pytest.approx(0.1) and test.p_floor == pytest.approx(0.1)  # 2 of C(6,3) = 20
    assert stats.permutation_mean_difference([1, 2, 3], [4, 5, 6]).p_value == pytest.approx(0.1)


def test_complete_separation_5_vs_5_is_2_of_252():
    test = stats.permutation_logrank([1, 2, 3, 4, 5], [True] * 5, [6, 7, 8, 9, 10], [True] * 5)
    assert test.p_value == pytest.approx(2 / 252) and test.p_floor == pytest.approx(2 / 252)
    assert round(test.p_value, 4) == 0.0079
    difference = stats.permutation_mean_difference([0.81, 0.82, 0.83, 0.84, 0.85], [0.71, 0.72, 0.73, 0.74, 0.75])
    assert difference.p_value == pytest.approx(2 / 252) and difference.statistic == pytest.approx(0.1)


def test_permutation_logrank_equals_brute_force_with_ties_and_censoring():
    rng = np.random.default_rng(5)
    for _ in range(25):
        n_a, n_b = (int(x) for x in rng.integers(1, 6, size=2))
        times_a, times_b = rng.integers(1, 5, n_a).astype(float), rng.integers(1, 5, n_b).astype(float)
        reached_a, reached_b = rng.random(n_a) < 0.6, rng.random(n_b) < 0.6
        test = stats.permutation_logrank(times_a, reached_a, times_b, reached_b)
        if not (reached_a.any() or reached_b.any()):
            assert test is None
            continue
        expected = brute_force_logrank_p(times_a, reached_a, times_b, reached_b)
        assert test.p_value == pytest.approx(float(expected), abs=1e-12)
        assert test.p_value >= test.p_floor >= 1 / math.comb(n_a + n_b, n_a)


def test_permutation_mean_difference_equals_brute_force():
    rng = np.random.default_rng(6)
    for _ in range(25):
        n_a, n_b = (int(x) for x in rng.integers(1, 7, size=2))
        a = rng.integers(500, 520, n_a) / 600  # accuracies on 600 images: ties happen
        b = rng.integers(500, 520, n_b) / 600
        expected = brute_force_mean_difference_p([Fraction(int(round(x * 600)), 600) for x in a],
                                                 [Fraction(int(round(x * 600)), 600) for x in b])
        assert stats.permutation_mean_difference(a, b).p_value == pytest.approx(float(expected), abs=1e-12)


def test_identical_arms_and_one_run_per_arm_give_p_one():
    assert stats.permutation_mean_difference([0.8] * 4, [0.8] * 4).p_value == 1.0
    one = stats.permutation_mean_difference([0.9], [0.7])
    assert one.p_value == 1.0 and one.p_floor == 1.0  # 2 relabellings, both as extreme
    same = stats.permutation_logrank([3, 4, 5], [True] * 3, [3, 4, 5], [True] * 3)
    assert same.p_value == 1.0
    assert stats.permutation_logrank([9, 9], [False, False], [9, 9], [False, False]) is None


def test_enumeration_of_10_vs_10_is_fast_and_exact():
    import time

    rng = np.random.default_rng(7)
    times_a, times_b = rng.exponential(5, 10).round(1), rng.exponential(9, 10).round(1)
    started = time.perf_counter()
    test = stats.permutation_logrank(times_a, times_a < 8, times_b, times_b < 8)
    seconds = time.perf_counter() - started
    assert test.exact and test.resamples == 184_756
    assert seconds < 5  # about 0.3 s on a shared 2-core Xeon; generous for load


def test_monte_carlo_beyond_the_limit_agrees_with_exact_enumeration(monkeypatch):
    rng = np.random.default_rng(8)
    times_a, times_b = rng.exponential(4, 8).round(), rng.exponential(8, 9).round()
    reached_a, reached_b = times_a < 10, times_b < 10
    exact = stats.permutation_logrank(times_a, reached_a, times_b, reached_b)
    exact_mean = stats.permutation_mean_difference(times_a, times_b)
    monkeypatch.setattr(stats, "EXACT_LIMIT", 100)
    stats._cached_logrank.cache_clear()
    sampled = stats.permutation_logrank(times_a, reached_a, times_b, reached_b, seed=1)
    sampled_mean = stats.permutation_mean_difference(times_a, times_b, seed=1)
    stats._cached_logrank.cache_clear()
    for exact_test, monte_carlo in ((exact, sampled), (exact_mean, sampled_mean)):
        assert exact_test.exact and not monte_carlo.exact and monte_carlo.resamples == 20_000
        assert monte_carlo.monte_carlo_se == pytest.approx(
            math.sqrt(monte_carlo.p_value * (1 - monte_carlo.p_value) / 20_000))
        assert abs(monte_carlo.p_value - exact_test.p_value) < 4 * monte_carlo.monte_carlo_se + 1e-4
        assert monte_carlo.p_floor == pytest.approx(1 / 20_001)


def test_monte_carlo_p_is_never_zero(monkeypatch):
    monkeypatch.setattr(stats, "EXACT_LIMIT", 10)
    test = stats.permutation_mean_difference(np.arange(8.0), np.arange(8.0) + 100)
    assert test.p_value >= 1 / 20_001 and not test.exact


def test_rejection_under_the_null_is_at_most_nominal():
    """5 vs 5 runs, exponential times censored at a budget: the exact tests reject at most 5% + MC error."""
    rng = np.random.default_rng(9)
    datasets = 600
    logrank_rejections = mean_rejections = asymptotic_rejections = 0
    from scipy import stats as scipy_stats

    for _ in range(datasets):
        times = rng.exponential(6, 10).round(1)
        reached = times <= 8
        times = np.minimum(times, 8)
        test = stats.permutation_logrank(times[:5], reached[:5], times[5:], reached[5:])
        logrank_rejections += test is not None and test.p_value < 0.05
        chi2 = stats.logrank_statistic(times[:5], reached[:5], times[5:], reached[5:])
        asymptotic_rejections += chi2 is not None and scipy_stats.chi2.sf(chi2, 1) < 0.05
        accuracies = rng.normal(0.8, 0.01, 10)
        mean_rejections += stats.permutation_mean_difference(accuracies[:5], accuracies[5:]).p_value < 0.05
    allowance = 0.05 + 2 * math.sqrt(0.05 * 0.95 / datasets)
    assert logrank_rejections / datasets <= allowance
    assert mean_rejections / datasets <= allowance
    assert asymptotic_rejections > logrank_rejections  # the chi-square approximation is the liberal one


def test_monte_carlo_rejection_under_the_null_is_at_most_nominal(monkeypatch):
    monkeypatch.setattr(stats, "EXACT_LIMIT", 1)
    monkeypatch.setattr(stats, "MONTE_CARLO_RESAMPLES", 199)  # (b+1)/(B+1) is valid for any B
    rng = np.random.default_rng(10)
    datasets = 400
    rejections = sum(stats.permutation_mean_difference(x[:6], x[6:], seed=i).p_value < 0.05
                     for i, x in enumerate(rng.normal(0, 1, (datasets, 12))))
    assert rejections / datasets <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / datasets)


@pytest.mark.parametrize("only_a, only_b, both", [(3, 0, 50), (7, 2, 40), (0, 0, 9), (12, 11, 5), (1, 9, 0)])
def test_mcnemar_matches_statsmodels(only_a, only_b, both):
    neither = 4
    correct_a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    correct_b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    test = stats.mcnemar_exact(correct_a, correct_b)
    reference = mcnemar([[both, only_a], [only_b, neither]], exact=True)
    assert test.p_value == pytest.approx(reference.pvalue, rel=1e-12)
    assert test.statistic == reference.statistic
    assert test.p_value >= test.p_floor
