"""analyse(): the declared primary endpoint and its Holm family, open bounds, edge cases, labels saved and
break-even, on results rows built here (old rows without the new fields included)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from galbench.analysis import stats


def row(variant, seed, accuracy, epochs=5.0, reached=True, size=None, threshold=0.8, **extra):
    """A results row as experiment.train.results_from_events writes it (plus optional new fields)."""
    cost = {"reached": reached, "epochs": epochs, "samples": epochs * 1000, "train_flops": epochs * 1e12,
            "eval_flops": 1e9, "device_seconds": epochs * 60, "eval_device_seconds": 1.0, "wall_seconds": 70.0,
            "energy_joules": None}
    result = {"variant": variant, "seed": seed, "model": "alexnet", "init": "scratch", "finished": True,
              "test_accuracy": accuracy, "best_val_accuracy": accuracy, "final_val_accuracy": accuracy,
              "thresholds": {str(threshold): cost},
              "totals": {"epochs": 10.0, "train_flops": 1e13, "device_seconds": 600.0}}
    if size is not None:
        result["train_size"] = size
    result.update(extra)
    return result


def arm(variant, accuracies, epochs=None, reached=None, **extra):
    epochs = epochs or [5.0] * len(accuracies)
    reached = reached if reached is not None else [True] * len(accuracies)
    return [row(variant, i, a, e, r, **extra) for i, (a, e, r) in enumerate(zip(accuracies, epochs, reached,
                                                                                   strict=True))]


def three_arms():
    return arm("scratch", [0.70, 0.71, 0.69, 0.72, 0.70], [6, 7, 8, 9, 10]) + \
        arm("fractal", [0.74, 0.75, 0.73, 0.76, 0.75], [3, 4, 4, 5, 6]) + \
        arm("imagenet", [0.70, 0.72, 0.71, 0.69, 0.70], [5, 6, 8, 9, 12])


def test_without_analysis_settings_the_primary_is_test_accuracy_and_the_analysis_says_so():
    analysis = stats.analyse(three_arms(), [0.8], "scratch")
    assert not analysis.settings.declared and analysis.settings.primary.text == "test_accuracy"
    assert any("default" in note for note in analysis.notes)
    assert [(c.variant, c.endpoint.text) for c in analysis.confirmatory] == \
        [("fractal", "test_accuracy"), ("imagenet", "test_accuracy")]
    fractal = analysis.confirmatory[0]
    assert fractal.test.name == "permutation mean difference" and fractal.test.p_value == pytest.approx(2 / 252)
    assert fractal.detected and fractal.p_adjusted == pytest.approx(2 * 2 / 252)


def test_declared_time_primary_makes_a_family_of_one_test_per_arm():
    runs = three_arms()
    analysis = stats.analyse(runs, [0.8], "scratch", {"primary": "epochs_to:0.8", "alpha": 0.05})
    assert analysis.settings.declared and not analysis.notes
    assert [c.endpoint.text for c in analysis.confirmatory] == ["epochs_to:0.8"] * 2
    raw = [c.test.p_value for c in analysis.confirmatory]
    assert [c.p_adjusted for c in analysis.confirmatory] == pytest.approx(stats.holm(raw).tolist())
    assert all(c.confirmatory and c.test.name == "permutation log-rank" for c in analysis.confirmatory)
    assert all(not c.confirmatory and c.p_adjusted is None for c in analysis.exploratory)
    questions = [(c.variant, c.train_size, c.endpoint.text) for c in analysis.confirmatory + analysis.exploratory]
    assert len(questions) == len(set(questions))  # every question tested once, with one test
    exploratory = {c.endpoint.text for c in analysis.exploratory}
    assert {"test_accuracy", "best_val_accuracy", "samples_to:0.8", "flops_to:0.8",
            "device_seconds_to:0.8"} <= exploratory
    assert "energy_joules_to:0.8" not in exploratory  # not recorded: not compared
    assert "test_balanced_accuracy" not in exploratory  # old rows: not recorded
    # exploratory comparisons are judged on their raw p
    for c in analysis.exploratory:
        assert c.detected == (c.test is not None and c.test.p_value < 0.05)


def test_each_arm_and_training_set_size_is_compared_with_the_baseline_at_the_same_size():
    runs = []
    for size, shift in ((100, 0.0), (400, 0.05)):
        runs += arm("scratch", [0.60 + shift, 0.61 + shift, 0.62 + shift], size=size)
        runs += arm("fractal", [0.65 + shift, 0.66 + shift, 0.64 + shift], size=size)
    analysis = stats.analyse(runs, [0.8], "scratch", {"primary": "test_accuracy"})
    assert analysis.train_sizes == [100, 400]
    assert [(c.variant, c.train_size) for c in analysis.confirmatory] == [("fractal", 100), ("fractal", 400)]
    assert all(c.estimate.value == pytest.approx(0.04) for c in analysis.confirmatory)


@pytest.mark.parametrize("section, message", [
    ({"primary": "test_acc"}, "unknown endpoint"),
    ({"primary": "epochs_to:0.95"}, "not one of the suite's thresholds"),
    ({"primary": "epochs_to:high"}, "is not a threshold"),
    ({"alpha": 1.5}, "alpha"),
    ({"alpha": True}, "alpha"),
    ({"equivalence": -0.01}, "equivalence"),
    ({"primary": "test_accuracy", "holm": True}, "unknown keys holm"),
])
def test_bad_analysis_settings_are_refused_with_the_valid_forms(section, message):
    with pytest.raises(ValueError, match=message):
        stats.Settings.from_section(section, [0.7, 0.8])


def test_endpoints_are_normalised_and_mapped_to_row_keys():
    endpoint = stats.Endpoint.parse("flops_to:0.80", [0.7, 0.8])
    assert (endpoint.text, endpoint.kind, endpoint.field, endpoint.threshold) == ("flops_to:0.8", "time",
                                                                                    "train_flops", 0.8)
    assert stats.Endpoint.parse("test_balanced_accuracy").kind == "accuracy"


def test_median_ratio_from_the_review_uses_the_kaplan_meier_medians():
    # exactly half of 4 runs reach it in each arm: KM medians 3.5 and 6.5 (the old code printed 0.00 [0.00, 0.68])
    runs = arm("scratch", [0.7] * 4, [6, 6.5, 10, 10], [True, True, False, False]) + \
        arm("fractal", [0.7] * 4, [3, 3.5, 10, 10], [True, True, False, False])
    analysis = stats.analyse(runs, [0.8], "scratch", {"primary": "epochs_to:0.8"})
    (item,) = analysis.confirmatory
    assert item.km.median == stats.Bound(3.5) and item.baseline_km.median == stats.Bound(6.5)
    assert item.estimate == stats.Bound(3.5 / 6.5)
    for bound in item.ci:
        assert bound.value is None or math.isfinite(bound.value)
    low, high = item.ci
    assert low.value <= 3.5 / 6.5 and (high.side == "at_least" or high.value >= 3.5 / 6.5)


def test_censoring_in_both_arms_gives_open_bounds_not_inf_or_nan():
    runs = arm("scratch", [0.7] * 4, [10, 10, 10, 10], [False] * 4) + \
        arm("fractal", [0.7] * 4, [3, 4, 10, 10], [True, True, False, False])
    (item,) = stats.analyse(runs, [0.8], "scratch", {"primary": "epochs_to:0.8"}).confirmatory
    assert item.estimate == stats.Bound(0.4, "at_most", "median not reached")  # 4 / (more than 10)
    assert item.test is not None and item.probability_of_improvement == pytest.approx(0.75)
    runs = arm("scratch", [0.7] * 3, [10] * 3, [False] * 3) + arm("fractal", [0.7] * 3, [9] * 3, [False] * 3)
    (item,) = stats.analyse(runs, [0.8], "scratch", {"primary": "epochs_to:0.8"}).confirmatory
    assert item.estimate == stats.Bound(None, "unknown", "not reached in either arm")
    assert item.test is None and item.p_adjusted is None and not item.detected
    assert item.km.median == stats.Bound(9.0, "at_least", "not reached")


def test_variant_that_rarely_gets_there_has_an_open_upper_end():
    estimate, (low, high) = stats.km_median_ratio([4, 20, 20, 20, 20], [True, False, False, False, False],
                                                  [3, 4, 5, 6, 7], [True] * 5)
    assert estimate == stats.Bound(4.0, "at_least", "median not reached")  # more than 20 / 5
    assert high.side == "at_least" and low.value > 0


def test_one_run_per_arm():
    labels = np.zeros(100, int)
    predictions_v, predictions_b = np.r_[np.zeros(80), np.ones(20)], np.r_[np.ones(30), np.zeros(70)]
    runs = [row("scratch", 0, 0.70, test_predictions=predictions_b.tolist(), test_labels=labels.tolist()),
            row("fractal", 0, 0.80, test_predictions=predictions_v.tolist(), test_labels=labels.tolist())]
    analysis = stats.analyse(runs, [0.8], "scratch")
    (item,) = analysis.confirmatory
    assert item.test.name == "McNemar exact" and item.estimate == stats.Bound(pytest.approx(0.1))
    assert item.ci[0].value < 0.1 < item.ci[1].value and item.mde is None and "McNemar" in item.mde_note
    runs = [row("scratch", 0, 0.70), row("fractal", 0, 0.80)]
    analysis = stats.analyse(runs, [0.8], "scratch")
    (item,) = analysis.confirmatory
    assert item.test.p_value == 1.0 and item.test.p_floor == 1.0 and not item.detected
    assert item.ci[0].side == "unknown" and "no difference of any size" in item.mde_note
    time = next(c for c in analysis.exploratory if c.endpoint.text == "epochs_to:0.8")
    assert time.ci[0].side == "unknown" and time.estimate == stats.Bound(1.0)


def test_identical_arms():
    runs = arm("scratch", [0.70, 0.72, 0.71], [4, 5, 6]) + arm("fractal", [0.70, 0.72, 0.71], [4, 5, 6])
    analysis = stats.analyse(runs, [0.8], "scratch", {"equivalence": 0.05})
    (item,) = analysis.confirmatory
    assert item.estimate == stats.Bound(0.0) and item.test.p_value == 1.0 and not item.detected
    assert item.welch_p == pytest.approx(1.0) and item.hedges_g == 0.0
    assert item.ci[0].value < 0 < item.ci[1].value
    time = next(c for c in analysis.exploratory if c.endpoint.text == "epochs_to:0.8")
    assert time.estimate == stats.Bound(1.0) and time.test.p_value == 1.0
    assert time.probability_of_improvement == pytest.approx(0.5)


def test_zero_variance_within_arms():
    runs = arm("scratch", [0.70] * 5) + arm("fractal", [0.75] * 5)
    (item,) = stats.analyse(runs, [0.8], "scratch").confirmatory
    assert item.test.p_value == pytest.approx(2 / 252) and item.detected
    assert item.mde is None and "no seed-to-seed variation" in item.mde_note
    assert item.ci[0].value == item.ci[1].value == pytest.approx(0.05)
    assert item.welch_p is None  # infinite t


def test_three_runs_per_arm_cannot_reach_significance_and_the_mde_says_so():
    runs = arm("scratch", [0.60, 0.61, 0.62]) + arm("fractal", [0.80, 0.81, 0.82])
    (item,) = stats.analyse(runs, [0.8], "scratch").confirmatory
    assert item.test.p_value == pytest.approx(0.1) and item.test.p_floor == pytest.approx(0.1)
    assert not item.detected and item.mde is None and "smallest reachable p is 0.1" in item.mde_note


def test_minimum_detectable_effect_and_equivalence_in_the_analysis():
    analysis = stats.analyse(three_arms(), [0.8], "scratch", {"equivalence": 0.03})
    for item in analysis.confirmatory:
        ci = item.difference_ci
        assert item.mde == pytest.approx(stats.permutation_mde_factor(5, 5, 0.05 / 2) * ci.se_seeds)
        assert item.equivalence == stats.tost(ci.difference, ci.se, ci.df, 0.03, 0.05)
    imagenet = analysis.confirmatory[1]
    assert not imagenet.detected and imagenet.equivalence.equivalent  # no difference found, and none above 0.03
    assert all(c.equivalence is None for c in analysis.exploratory if c.endpoint.kind == "time")


def test_old_rows_without_new_fields_are_analysed_on_seeds_only():
    analysis = stats.analyse(three_arms(), [0.8], "scratch")
    scratch = analysis.arms[0]
    assert set(scratch.accuracy) == {"test_accuracy", "best_val_accuracy"}
    assert "seeds only" in scratch.accuracy["test_accuracy"].ci_method
    assert analysis.train_sizes == [None] and analysis.labels_saved == []
    assert set(scratch.km) == {"epochs_to:0.8", "samples_to:0.8", "flops_to:0.8", "device_seconds_to:0.8"}


def test_paired_predictions_are_used_when_every_run_has_them():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 300)
    runs = []
    for variant, p in (("scratch", 0.7), ("fractal", 0.75)):
        for seed in range(4):
            predictions = np.where(rng.random(300) < p, labels, (labels + 1) % 3)
            balanced = np.mean([(predictions[labels == k] == k).mean() for k in range(3)])
            runs.append(row(variant, seed, float((predictions == labels).mean()), test_predictions=predictions.tolist(),
                            test_labels=labels.tolist(), test_balanced_accuracy=float(balanced)))
    analysis = stats.analyse(runs, [0.8], "scratch", {"primary": "test_balanced_accuracy"})
    (item,) = analysis.confirmatory
    assert item.endpoint.text == "test_balanced_accuracy"
    assert "test galaxies" in item.ci_method and item.difference_ci.se_images > 0
    assert not analysis.notes
    runs[0]["test_labels"] = None  # one run lacks labels: seeds only, and the analysis says so
    analysis = stats.analyse(runs, [0.8], "scratch")
    assert "seeds only" in analysis.confirmatory[0].ci_method and analysis.notes


def test_labels_saved_against_a_hand_computed_case():
    sizes, means = [100, 200, 400, 800], [0.60, 0.70, 0.75, 0.80]
    # interpolation in log size: 0.72 is 0.4 of the way from 0.70 (200) to 0.75 (400): 200 * 2 ** 0.4
    assert stats.labels_saved(sizes, means, 0.72) == stats.Bound(pytest.approx(200 * 2 ** 0.4))
    assert stats.labels_saved(sizes, means, 0.55) == stats.Bound(100.0, "at_most", "matched at the smallest size")
    assert stats.labels_saved(sizes, means, 0.60) == stats.Bound(100.0, "at_most", "matched at the smallest size")
    assert stats.labels_saved(sizes, means, 0.85).side == "at_least"
    assert stats.labels_saved(sizes, means, 0.85).value == 800
    assert stats.labels_saved(sizes, means, 0.80) == stats.Bound(800.0)
    # a dip does not matter: the first crossing (100 -> 200, 0.8 of the way) counts
    assert stats.labels_saved(sizes, [0.60, 0.75, 0.70, 0.80], 0.72) == stats.Bound(pytest.approx(100 * 2 ** 0.8))


def test_labels_saved_in_the_analysis():
    runs = []
    for size, mean in zip([100, 200, 400, 800], [0.60, 0.70, 0.75, 0.80], strict=True):
        runs += arm("scratch", [mean - 0.01, mean, mean + 0.01], size=size)
    runs += arm("fractal", [0.71, 0.72, 0.73], size=100) + arm("fractal", [0.84, 0.85, 0.86], size=200)
    analysis = stats.analyse(runs, [0.8], "scratch")
    found = {e.train_size: e for e in analysis.labels_saved}
    assert found[100].baseline_labels == stats.Bound(pytest.approx(200 * 2 ** 0.4))
    assert found[100].arm_accuracy == pytest.approx(0.72) and found[100].baseline_monotone
    low, high = found[100].ci
    assert low.value < 200 * 2 ** 0.4 < high.value and "seeds" in found[100].ci_method
    assert found[200].baseline_labels.side == "at_least" and found[200].baseline_labels.value == 800
    assert found[200].ci[1].side == "at_least"


def test_break_even_by_hand():
    assert stats.break_even(100.0, 2.0, 7.0) == stats.BreakEven(20, 20.0, False)  # 100 / (7 - 2)
    assert stats.break_even(101.0, 2.0, 7.0).fine_tunes == 21
    assert stats.break_even(0.0, 2.0, 7.0).fine_tunes == 1
    assert stats.break_even(100.0, 7.0, 7.0) == stats.BreakEven(None, None, True)
    assert stats.break_even(100.0, 9.0, 7.0).never
    # 0.3 / (0.7 - 0.6) is 3.0000000000000004 in floats; 3 fine-tunes already pay it back
    assert stats.break_even(0.3, 0.6, 0.7).fine_tunes == 3


def test_costs_and_break_even_in_the_analysis():
    pretrain = {"train_flops": 4e13, "device_seconds": 3000.0}
    runs = arm("scratch", [0.7] * 3, [6, 8, 10]) + \
        arm("fractal", [0.75] * 3, [2, 2, 4], pretrain_cost=pretrain, pretrain_id="p0")
    analysis = stats.analyse(runs, [0.8], "scratch", {"primary": "epochs_to:0.8"})
    flops = {c.variant: c for c in analysis.costs if c.metric == "train_flops"}
    assert flops["scratch"].scope == "to 0.8" and flops["scratch"].estimate == stats.Bound(8e12)
    assert flops["fractal"].estimate == stats.Bound(2e12) and flops["fractal"].pretraining == 4e13
    assert flops["fractal"].break_even == stats.break_even(4e13, 2e12, 8e12)  # 40 / 6 -> 7 fine-tunes
    assert flops["fractal"].break_even.fine_tunes == 7 and flops["scratch"].break_even is None
    analysis = stats.analyse(runs, [0.8], "scratch")  # accuracy primary: the cost of a full training
    seconds = {c.variant: c for c in analysis.costs if c.metric == "device_seconds"}
    assert seconds["fractal"].scope == "full training" and seconds["fractal"].estimate == stats.Bound(600.0)
    assert seconds["fractal"].break_even.never  # fine-tuning costs as much as training from scratch here


def test_device_seconds_interval_is_the_t_interval_of_the_mean_of_totals():
    runs = [row("scratch", i, 0.7) for i in range(4)]
    for r, seconds in zip(runs, [500.0, 600.0, 700.0, 650.0], strict=True):
        r["totals"] = {"train_flops": 1e13, "device_seconds": seconds}
    (cost,) = [c for c in stats.analyse(runs, [0.8], "scratch").costs if c.metric == "device_seconds"]
    from scipy import stats as scipy_stats
    values = np.array([500.0, 600.0, 700.0, 650.0])
    half_width = scipy_stats.t.ppf(0.975, 3) * values.std(ddof=1) / 2
    assert cost.ci[0].value == pytest.approx(values.mean() - half_width)
    assert cost.ci[1].value == pytest.approx(values.mean() + half_width)


def test_main_threshold_is_descriptive_only():
    runs = arm("scratch", [0.7] * 4, [6, 7, 8, 9], threshold=0.8) + arm("fractal", [0.75] * 4, threshold=0.8)
    analysis = stats.analyse(runs, [0.8], "scratch")
    assert analysis.main_threshold == 0.8
    assert all(c.endpoint.text == "test_accuracy" for c in analysis.confirmatory)


def test_notes_for_shared_gpus_and_several_pretrainings():
    runs = arm("scratch", [0.7, 0.71, 0.72], shared_gpu=True) + \
        [row("fractal", i, 0.75, pretrain_id=f"p{i % 2}", replicate=i % 2) for i in range(4)]
    notes = stats.analyse(runs, [0.8], "scratch").notes
    assert any("3 of 7 runs shared their GPU" in note for note in notes)
    assert any("fractal: runs start from 2 pretrainings" in note for note in notes)
