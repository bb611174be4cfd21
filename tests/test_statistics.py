"""Statistics checked against hand calculations (ties, censoring, all-censored arms included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from galbench.analysis import stats


def test_kaplan_meier_all_reached_is_the_plain_median():
    km = stats.kaplan_meier([5, 1, 4, 2, 3], [True] * 5)
    assert km.median == 3 and km.reach_probability == 1.0 and km.n_reached == 5


def test_kaplan_meier_with_censoring_matches_hand_product_limit():
    # S(1)=4/5=0.8; at t=2 one event and one censoring, 4 at risk: S=0.8*3/4=0.6; at t=3, 2 at risk: S=0.3
    km = stats.kaplan_meier([1, 2, 2, 3, 4], [True, True, False, True, False])
    assert km.survival[:3] == pytest.approx((0.8, 0.6, 0.3))
    assert km.median == 3 and km.reach_probability == pytest.approx(0.7)


def test_kaplan_meier_all_censored_never_reaches():
    km = stats.kaplan_meier([8, 8, 8], [False, False, False])
    assert math.isinf(km.median) and km.reach_probability == 0 and km.n_reached == 0


def test_logrank_matches_the_hand_computed_statistic():
    # events at 1,2 (arm x) and 3,4 (arm y): O-E = 2 - (1/2 + 1/3), V = 1/4 + 2/9  -> chi2 with 1 dof
    chi2 = (2 - (0.5 + 1 / 3)) ** 2 / (0.25 + 2 / 9)
    expected = scipy_stats.chi2.sf(chi2, 1)
    assert stats.logrank_p([1, 2], [True, True], [3, 4], [True, True]) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.0896, abs=1e-3)


def test_logrank_with_nothing_reached_anywhere_is_not_a_test():
    assert stats.logrank_p([5, 5], [False, False], [5, 5], [False, False]) is None


def test_mann_whitney_probability_of_improvement_and_exact_p():
    test = stats.mann_whitney_lower_is_better([1, 2, 3], [4, 5, 6])
    assert test.probability_of_improvement == 1.0 and test.u_statistic == 9
    assert test.p_value == pytest.approx(0.1)  # exact: 2 of the 20 orderings are this extreme


def test_censored_runs_rank_as_slowest_with_ties_counted_half():
    variant = stats.censored_as_slowest([1, 2, 9], [True, True, False])
    baseline = stats.censored_as_slowest([3, 9, 9], [True, False, False])
    # pairs where the baseline is slower: 3>1,3>2; inf>1,inf>2 twice; inf vs inf ties twice (half each) = 7
    assert stats.mann_whitney_lower_is_better(variant, baseline).probability_of_improvement == pytest.approx(7 / 9)


def test_holm_by_hand():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> monotone 0.06
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(stats.holm([None, 0.2])[0]) and stats.holm([None, 0.2])[1] == pytest.approx(0.2)
    assert stats.holm([0.6, 0.7]).tolist() == [1.0, 1.0]


def test_welch_and_hedges_against_hand_formulas():
    a, b = [0.80, 0.82, 0.84], [0.70, 0.72, 0.74]
    result = stats.compare_accuracy("v", "test", a, b)
    t = 0.1 / math.sqrt(0.0004 / 3 + 0.0004 / 3)  # both variances 0.0004, Welch dof = 4
    assert result.welch_p == pytest.approx(2 * scipy_stats.t.sf(t, 4), rel=1e-6)
    assert result.hedges_g == pytest.approx(5 * (1 - 3 / 15))
    assert result.difference == pytest.approx(0.1) and result.assessed


def test_interquartile_mean_drops_the_outer_quarters():
    assert stats.interquartile_mean([1, 2, 3, 4, 100, 5, 6, 7]) == pytest.approx(4.5)


def test_median_ratio_and_bootstrap_interval_contains_it():
    ratio, low, high = stats.median_ratio_ci([1, 2, 3, 2, 2], [4, 4, 4, 5, 3])
    assert ratio == pytest.approx(0.5) and low <= ratio <= high


def _runs(variant, epochs, reached, accuracies):
    return [{"variant": variant, "test_accuracy": acc, "best_val_accuracy": acc,
             "thresholds": {"0.8": {"epochs": e, "reached": r}}} for e, r, acc in zip(epochs, reached, accuracies,
                                                                                      strict=True)]


def test_fewer_than_three_seeds_gives_estimates_but_no_p_values():
    runs = _runs("scratch", [4, 5], [True, True], [0.8, 0.81]) + _runs("fractal", [2, 3], [True, True], [0.85, 0.86])
    analysis = stats.analyse(runs, [0.8], "scratch")
    (item,) = analysis.time_to_threshold
    assert not item.assessed and item.logrank_p is None and item.mann_whitney_p is None
    assert item.median_ratio == pytest.approx(2.5 / 4.5)
    accuracy = next(a for a in analysis.accuracy if a.variant == "fractal" and a.split == "test")
    assert accuracy.welch_p is None and not accuracy.assessed


def test_analyse_keeps_censored_runs_and_adjusts_everything_together():
    runs = _runs("scratch", [6, 8, 8, 7], [True, False, False, True], [0.7, 0.71, 0.69, 0.72]) + \
        _runs("fractal", [2, 3, 2, 4], [True, True, True, True], [0.8, 0.82, 0.81, 0.83])
    analysis = stats.analyse(runs, [0.8], "scratch")
    (item,) = analysis.time_to_threshold
    assert item.baseline_km.n == 4 and item.baseline_km.n_reached == 2  # censored runs are in
    assert item.probability_of_improvement == 1.0
    raw = [item.logrank_p, item.mann_whitney_p] + [p for a in analysis.accuracy for p in (a.welch_p, a.mann_whitney_p)]
    adjusted = stats.holm(raw)
    assert item.logrank_p_adjusted == pytest.approx(adjusted[0])
    assert item.mann_whitney_p_adjusted >= item.mann_whitney_p


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.lists(st.floats(min_value=0, max_value=1, allow_nan=False), min_size=1, max_size=30))
def test_holm_is_monotone_bounded_and_never_below_the_raw_p(p_values):
    adjusted = stats.holm(p_values)
    assert all(raw <= adj <= 1.0 for raw, adj in zip(p_values, adjusted, strict=True))
    order = np.argsort(p_values, kind="stable")
    assert all(np.diff(adjusted[order]) >= -1e-12)
