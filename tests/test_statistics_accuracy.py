"""Accuracy intervals (two-level bootstrap), minimum detectable effect and equivalence, checked by simulation
and against statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.special import expit
from statsmodels.stats.weightstats import ttost_ind

from galbench.analysis import stats

IMAGES = 600
LOGIT_BASELINE, LOGIT_VARIANT = 1.3, 1.45
IMAGE_SD = 1.5  # per-galaxy difficulty on the logit scale, shared by the arms


def simulated_study(rng, seeds: int, seed_sd: float, interaction_sd: float = 0.5):
    """One study: a fresh test set of IMAGES galaxies, `seeds` runs per arm, per-image predictions.

    Run accuracy varies by seed (seed_sd), by galaxy (difficulty shared by both arms) and by how much
    the variant's difficulty differs from the baseline's galaxy by galaxy (interaction_sd).
    """
    difficulty = rng.normal(0, IMAGE_SD, IMAGES)
    interaction = rng.normal(0, interaction_sd, IMAGES)
    labels = rng.integers(0, 2, IMAGES)

    def arm(logit, extra):
        run_effect = rng.normal(0, seed_sd, (seeds, 1))
        correct = rng.random((seeds, IMAGES)) < expit(logit + difficulty + extra + run_effect)
        return np.where(correct, labels, 1 - labels)

    return arm(LOGIT_VARIANT, interaction), arm(LOGIT_BASELINE, 0.0), labels


def population_accuracy(logit: float, interaction_sd: float, seed_sd: float) -> float:
    """The arm's expected accuracy over runs and over the population of galaxies (large Monte-Carlo)."""
    rng = np.random.default_rng(123)
    draws = 2_000_000
    noise = rng.normal(0, 1, draws) * math.sqrt(IMAGE_SD ** 2 + interaction_sd ** 2 + seed_sd ** 2)
    return float(expit(logit + noise).mean())


@pytest.mark.parametrize("interaction_sd", [0.5, 1.5])
def test_accuracy_difference_interval_covers_at_least_93_percent(interaction_sd):
    """5 seeds per arm, 600 test galaxies drawn afresh per study; the target is the population difference."""
    seed_sd = 0.08  # about 0.013 in accuracy: comparable to the test set's binomial error
    rng = np.random.default_rng(11)
    truth = population_accuracy(LOGIT_VARIANT, interaction_sd, seed_sd) - \
        population_accuracy(LOGIT_BASELINE, 0.0, seed_sd)
    truth_baseline = population_accuracy(LOGIT_BASELINE, 0.0, seed_sd)
    studies = 300
    covered = covered_baseline = covered_by_welch = 0
    for _ in range(studies):
        predictions_v, predictions_b, labels = simulated_study(rng, 5, seed_sd, interaction_sd)
        values_v, values_b = (predictions_v == labels).mean(1), (predictions_b == labels).mean(1)
        ci = stats.accuracy_difference_ci(values_v, values_b, predictions_v, predictions_b, labels, resamples=400)
        covered += ci.low <= truth <= ci.high
        low, high = stats.accuracy_summary("test_accuracy", values_b, predictions_b, labels, resamples=400).ci
        covered_baseline += low <= truth_baseline <= high
        welch = scipy_stats.ttest_ind(values_v, values_b, equal_var=False).confidence_interval()
        covered_by_welch += welch.low <= truth <= welch.high
    assert covered / studies >= 0.93
    assert covered_baseline / studies >= 0.93
    if interaction_sd > 1:  # seeds alone miss the test set's own sampling error
        assert covered_by_welch / studies < 0.9


def test_paired_interval_is_narrower_than_ignoring_the_pairing_and_shows_both_sources():
    rng = np.random.default_rng(12)
    predictions_v, predictions_b, labels = simulated_study(rng, 5, 0.08)
    values_v, values_b = (predictions_v == labels).mean(1), (predictions_b == labels).mean(1)
    paired = stats.accuracy_difference_ci(values_v, values_b, predictions_v, predictions_b, labels)
    assert paired.difference == pytest.approx(values_v.mean() - values_b.mean())
    assert paired.se_seeds == pytest.approx(math.sqrt(values_v.var(ddof=1) / 5 + values_b.var(ddof=1) / 5))
    # unpaired, each arm's own test-set error would add up: binomial SE of one arm's accuracy on 600 images
    unpaired_images = math.sqrt(sum(v.mean() * (1 - v.mean()) / IMAGES for v in (values_v, values_b)))
    assert 0 < paired.se_images < unpaired_images
    # the run-by-image interaction is in both parts and is counted once
    assert max(paired.se_seeds, paired.se_images) <= paired.se < math.hypot(paired.se_seeds, paired.se_images)
    assert "test galaxies" in paired.method
    seeds_only = stats.accuracy_difference_ci(values_v, values_b)
    assert seeds_only.se_images is None and "seeds only" in seeds_only.method


def test_balanced_accuracy_is_recomputed_per_class():
    rng = np.random.default_rng(13)
    labels = rng.integers(0, 3, 300)
    predictions = np.where(rng.random((4, 300)) < 0.8, labels, (labels + 1) % 3)
    expected = [np.mean([(p[labels == k] == k).mean() for k in range(3)]) for p in predictions]
    summary = stats.accuracy_summary("test_balanced_accuracy", expected, predictions, labels)
    assert summary.values == pytest.approx(expected) and summary.ci[0] < summary.mean < summary.ci[1]


def test_one_run_per_arm_without_predictions_has_no_interval():
    ci = stats.accuracy_difference_ci([0.8], [0.75])
    assert ci.low is None and ci.high is None and ci.se_seeds is None
    assert stats.accuracy_summary("test_accuracy", [0.8]).ci is None


def test_one_run_per_arm_with_predictions_covers_test_set_sampling_only():
    labels = np.zeros(200, int)
    ci = stats.accuracy_difference_ci([0.8], [0.7], np.r_[np.zeros(160), np.ones(40)][None, :],
                                      np.r_[np.ones(60), np.zeros(140)][None, :], labels)
    assert ci.difference == pytest.approx(0.1) and ci.low < 0.1 < ci.high
    assert ci.se_seeds is None and "one run per arm" in ci.method


def test_an_arm_with_one_run_borrows_the_other_arms_seed_variance():
    ci = stats.accuracy_difference_ci([0.80], [0.70, 0.72, 0.74, 0.76])
    variance = np.var([0.70, 0.72, 0.74, 0.76], ddof=1)
    assert ci.se_seeds == pytest.approx(math.sqrt(variance + variance / 4))
    assert ci.se == pytest.approx(ci.se_seeds, rel=0.15) and "borrows" in ci.method


def test_zero_variance_gives_a_point_interval():
    ci = stats.accuracy_difference_ci([0.8] * 5, [0.7] * 5)
    assert ci.low == ci.high == pytest.approx(0.1) and ci.se == pytest.approx(0, abs=1e-12)


def test_minimum_detectable_effect_has_80_percent_power_by_simulation():
    """At the MDE, the exact permutation test of 5 vs 5 runs detects the difference about 80% of the time."""
    sd, runs = 0.01, 5
    se = sd * math.sqrt(2 / runs)
    mde = stats.minimum_detectable_effect(se, 2 * runs - 2, 0.05)
    assert mde == pytest.approx((scipy_stats.t.ppf(0.975, 8) + scipy_stats.t.ppf(0.8, 8)) * se)
    rng = np.random.default_rng(14)
    trials = 1500
    detected = sum(stats.permutation_mean_difference(rng.normal(0.8 + mde, sd, runs),
                                                     rng.normal(0.8, sd, runs)).p_value < 0.05
                   for _ in range(trials))
    assert 0.74 <= detected / trials <= 0.86
    half = sum(stats.permutation_mean_difference(rng.normal(0.8 + mde / 2, sd, runs),
                                                 rng.normal(0.8, sd, runs)).p_value < 0.05
               for _ in range(500))
    assert half / 500 < 0.5  # and an effect half that size is mostly missed


@pytest.mark.parametrize("usevar", ["unequal", "pooled"])
def test_tost_matches_statsmodels(usevar):
    rng = np.random.default_rng(15)
    for _ in range(20):
        a, b = rng.normal(0.80, 0.01, 5), rng.normal(0.805, 0.015, 7)
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        if usevar == "unequal":
            se = math.sqrt(va + vb)
            df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
        else:
            pooled = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
            se, df = math.sqrt(pooled * (1 / a.size + 1 / b.size)), a.size + b.size - 2
        ours = stats.tost(a.mean() - b.mean(), se, df, 0.02, 0.05)
        reference = ttost_ind(a, b, -0.02, 0.02, usevar=usevar)[0]
        assert ours.p_value == pytest.approx(reference, rel=1e-9)
        assert ours.equivalent == (reference < 0.05)
        inside = -0.02 < ours.ci[0] and ours.ci[1] < 0.02
        assert inside == ours.equivalent


def test_tost_with_zero_standard_error():
    assert stats.tost(0.001, 0.0, math.inf, 0.01, 0.05).equivalent
    assert not stats.tost(0.02, 0.0, math.inf, 0.01, 0.05).equivalent
