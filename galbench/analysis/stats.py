"""Significance statistics: pure functions over arrays, scipy underneath. Opens no file, renders nothing.

Time-to-threshold is a survival problem: a run that never reached a threshold is right-censored at its
total cost, never dropped. Its median and reach probability come from the Kaplan-Meier estimate, the
comparison from the log-rank test and from a Mann-Whitney U test in which censored runs rank as slowest.
Final accuracies are compared with Welch's t-test and Mann-Whitney U. Holm's method adjusts every p-value of
a report together. Arms with fewer than MIN_SEEDS runs get estimates but no p-values.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

MIN_SEEDS = 3
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class KaplanMeier:
    """Kaplan-Meier summary of times to an event (reaching a threshold)."""

    n: int
    n_reached: int
    median: float  # inf where fewer than half are estimated to reach it
    reach_probability: float  # estimated probability of reaching it by the largest observed time
    times: tuple[float, ...] = ()
    survival: tuple[float, ...] = ()  # P(not yet reached) just after each of `times`


def kaplan_meier(times, reached) -> KaplanMeier:
    """Kaplan-Meier estimate for times (reached=True) and censoring totals (reached=False)."""
    times = np.asarray(times, dtype=float)
    reached = np.asarray(reached, dtype=bool)
    n, n_reached = times.size, int(reached.sum())
    if n_reached == 0:
        return KaplanMeier(n, 0, float("inf"), 0.0)
    data = stats.CensoredData(uncensored=times[reached], right=times[~reached])
    sf = stats.ecdf(data).sf
    quantiles, probabilities = np.asarray(sf.quantiles), np.asarray(sf.probabilities)
    below = np.flatnonzero(probabilities <= 0.5)
    median = float(quantiles[below[0]]) if below.size else float("inf")
    return KaplanMeier(n, n_reached, median, float(1 - probabilities[-1]), tuple(quantiles.tolist()),
                       tuple(probabilities.tolist()))


def logrank_p(times_a, reached_a, times_b, reached_b) -> float | None:
    """Two-sided log-rank p-value (None where neither arm has an event: nothing to compare)."""
    reached_a, reached_b = np.asarray(reached_a, bool), np.asarray(reached_b, bool)
    if not (reached_a.any() or reached_b.any()):
        return None
    times_a, times_b = np.asarray(times_a, float), np.asarray(times_b, float)
    x = stats.CensoredData(uncensored=times_a[reached_a], right=times_a[~reached_a])
    y = stats.CensoredData(uncensored=times_b[reached_b], right=times_b[~reached_b])
    return float(stats.logrank(x=x, y=y).pvalue)


def censored_as_slowest(times, reached) -> np.ndarray:
    """Times with censored runs set to +inf, so that they rank after every run that got there."""
    return np.where(np.asarray(reached, bool), np.asarray(times, float), np.inf)


@dataclass(frozen=True)
class RankTest:
    """Mann-Whitney U of variant against baseline, for a quantity where smaller is better."""

    u_statistic: float
    p_value: float
    probability_of_improvement: float  # P(variant < baseline) + P(tie) / 2


def mann_whitney_lower_is_better(variant, baseline) -> RankTest:
    """Mann-Whitney U (two-sided) and the probability that the variant's value is the smaller."""
    variant, baseline = np.asarray(variant, float), np.asarray(baseline, float)
    result = stats.mannwhitneyu(baseline, variant, alternative="two-sided")
    # U for `baseline` counts pairs where baseline > variant (ties half): the variant is faster there
    return RankTest(float(result.statistic), float(result.pvalue),
                    float(result.statistic) / (variant.size * baseline.size))


def _median_ratio(variant, baseline, axis=-1):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.median(variant, axis=axis) / np.median(baseline, axis=axis)


def median_ratio_ci(variant, baseline, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of medians (variant / baseline) with a percentile bootstrap CI; censored values count as inf."""
    variant, baseline = np.asarray(variant, float), np.asarray(baseline, float)
    ratio = float(_median_ratio(variant, baseline))
    if variant.size < 2 or baseline.size < 2:
        return ratio, float("nan"), float("nan")
    # censored runs are inf: inf - inf in scipy's checks, and a bootstrap distribution that is all inf, are
    # expected here (scipy warns about both); the interval then reads inf, which is the honest answer
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap((variant, baseline), _median_ratio, n_resamples=BOOTSTRAP_RESAMPLES,
                                 confidence_level=CONFIDENCE, method="percentile", vectorized=True,
                                 rng=np.random.default_rng(seed))
    return ratio, float(result.confidence_interval.low), float(result.confidence_interval.high)


def interquartile_mean(values) -> float:
    """Mean of the middle 50% (scipy's trim_mean with 25% cut from each end)."""
    return float(stats.trim_mean(np.asarray(values, float), 0.25))


def mean_ci(values, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (nan with fewer than 2 values)."""
    values = np.asarray(values, float)
    if values.size < 2 or np.ptp(values) == 0:
        return (float(values.mean()), float(values.mean())) if values.size else (float("nan"), float("nan"))
    result = stats.bootstrap((values,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def hedges_g(a, b) -> float:
    """Standardised mean difference (a - b) with the small-sample correction."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n1, n2 = a.size, b.size
    pooled = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    if pooled == 0:
        return 0.0 if a.mean() == b.mean() else float(np.sign(a.mean() - b.mean()) * np.inf)
    correction = 1 - 3 / (4 * (n1 + n2) - 9)
    return float((a.mean() - b.mean()) / pooled * correction)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment; None entries (not assessed) stay None."""
    values = np.asarray([np.nan if p is None else p for p in p_values], dtype=float)
    present = np.flatnonzero(~np.isnan(values))
    adjusted = np.full(values.shape, np.nan)
    if present.size:
        order = present[np.argsort(values[present], kind="stable")]
        m = order.size
        running = 0.0
        for rank, index in enumerate(order):
            running = max(running, min(1.0, (m - rank) * values[index]))
            adjusted[index] = running
    return adjusted


@dataclass
class ThresholdComparison:
    """One variant against the baseline at one threshold, for one cost metric."""

    variant: str
    threshold: float
    metric: str
    km: KaplanMeier
    baseline_km: KaplanMeier
    median_ratio: float
    ratio_ci: tuple[float, float]
    probability_of_improvement: float | None
    logrank_p: float | None
    mann_whitney_p: float | None
    assessed: bool
    logrank_p_adjusted: float | None = None
    mann_whitney_p_adjusted: float | None = None


@dataclass
class AccuracyComparison:
    """Final accuracies of a variant (and, for comparisons, against the baseline)."""

    variant: str
    split: str
    n: int
    mean: float
    iqm: float
    ci: tuple[float, float]
    values: list[float]
    difference: float | None = None
    hedges_g: float | None = None
    welch_p: float | None = None
    mann_whitney_p: float | None = None
    assessed: bool = False
    welch_p_adjusted: float | None = None
    mann_whitney_p_adjusted: float | None = None


@dataclass
class Analysis:
    """Everything a report shows: per-threshold comparisons and accuracy comparisons, Holm-adjusted together."""

    baseline: str
    variants: list[str]
    thresholds: list[float]
    metric: str
    time_to_threshold: list[ThresholdComparison] = field(default_factory=list)
    accuracy: list[AccuracyComparison] = field(default_factory=list)


def compare_threshold(variant: str, threshold: float, metric: str, times, reached, base_times, base_reached,
                      seed: int = 0) -> ThresholdComparison:
    """All time-to-threshold statistics of one variant against the baseline."""
    km, base_km = kaplan_meier(times, reached), kaplan_meier(base_times, base_reached)
    slow, base_slow = censored_as_slowest(times, reached), censored_as_slowest(base_times, base_reached)
    ratio, low, high = median_ratio_ci(slow, base_slow, seed)
    assessed = min(len(times), len(base_times)) >= MIN_SEEDS
    rank = mann_whitney_lower_is_better(slow, base_slow) if len(times) and len(base_times) else None
    return ThresholdComparison(
        variant, threshold, metric, km, base_km, ratio, (low, high),
        rank.probability_of_improvement if rank else None,
        logrank_p(times, reached, base_times, base_reached) if assessed else None,
        rank.p_value if assessed and rank else None, assessed)


def compare_accuracy(variant: str, split: str, values, baseline_values=None, seed: int = 0) -> AccuracyComparison:
    """Summary of a variant's final accuracies and, given the baseline's, the tests against it."""
    values = np.asarray(values, float)
    result = AccuracyComparison(variant, split, int(values.size), float(values.mean()), interquartile_mean(values),
                                mean_ci(values, seed), values.tolist())
    if baseline_values is not None:
        base = np.asarray(baseline_values, float)
        result.difference = float(values.mean() - base.mean())
        result.assessed = min(values.size, base.size) >= MIN_SEEDS
        if result.assessed:
            result.hedges_g = hedges_g(values, base)
            if np.ptp(np.concatenate([values, base])) > 0:
                result.welch_p = float(stats.ttest_ind(values, base, equal_var=False).pvalue)
                result.mann_whitney_p = float(stats.mannwhitneyu(values, base, alternative="two-sided").pvalue)
            else:  # identical values everywhere: no evidence of any difference
                result.welch_p = result.mann_whitney_p = 1.0
    return result


def analyse(runs: list[dict], thresholds: list[float], baseline: str, metric: str = "epochs",
            seed: int = 0) -> Analysis:
    """Compare every variant with the baseline over a suite's results rows (see runner.write_results)."""
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    if baseline not in variants:
        raise ValueError(f"baseline {baseline!r} has no runs")
    analysis = Analysis(baseline, variants, thresholds, metric)

    def arm(name, threshold):
        rows = [r["thresholds"][str(threshold)] for r in runs if r["variant"] == name]
        return [row[metric] for row in rows], [row["reached"] for row in rows]

    for threshold in thresholds:
        base_times, base_reached = arm(baseline, threshold)
        for variant in variants:
            if variant != baseline:
                times, reached = arm(variant, threshold)
                analysis.time_to_threshold.append(
                    compare_threshold(variant, threshold, metric, times, reached, base_times, base_reached, seed))
    for split in ("test", "best_val"):
        key = f"{split}_accuracy"
        base_values = [r[key] for r in runs if r["variant"] == baseline and r[key] is not None]
        for variant in variants:
            values = [r[key] for r in runs if r["variant"] == variant and r[key] is not None]
            if values:
                analysis.accuracy.append(compare_accuracy(variant, split, values,
                                                          None if variant == baseline else base_values, seed))
    _adjust_all(analysis)
    return analysis


def _adjust_all(analysis: Analysis) -> None:
    """Holm across every p-value in the analysis (log-rank, Mann-Whitney, Welch) at once."""
    slots = []
    for item in analysis.time_to_threshold:
        slots += [(item, "logrank_p"), (item, "mann_whitney_p")]
    for item in analysis.accuracy:
        slots += [(item, "welch_p"), (item, "mann_whitney_p")]
    adjusted = holm([getattr(obj, name) for obj, name in slots])
    for (obj, name), value in zip(slots, adjusted, strict=True):
        setattr(obj, f"{name}_adjusted", None if np.isnan(value) else float(value))


COST_METRICS = ("epochs", "samples", "train_flops", "device_seconds", "energy_joules")


def cost_medians(runs: list[dict], variant: str, threshold: float) -> dict[str, float | None]:
    """Kaplan-Meier median of every cost metric to a threshold for one variant (None where not recorded)."""
    rows = [r["thresholds"][str(threshold)] for r in runs if r["variant"] == variant]
    medians: dict[str, float | None] = {}
    for metric in COST_METRICS:
        values = [row.get(metric) for row in rows]
        if not rows or any(v is None for v in values):
            medians[metric] = None
            continue
        medians[metric] = kaplan_meier(values, [row["reached"] for row in rows]).median
    return medians
