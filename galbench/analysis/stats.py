"""Significance statistics for galbench suites: pure functions over arrays and results rows, no I/O.

How it is called
----------------
``analyse(runs, thresholds, baseline, settings=None, seed=0) -> Analysis``

* ``runs``: the results rows (one dict per finished run, see ``experiment.train.results_from_events``).
  Optional row fields, used where present: ``test_predictions`` and ``test_labels`` (per-image predicted
  and true labels, in test order), ``test_balanced_accuracy``, ``train_size`` (None or absent: the whole
  training split), ``pretrain_cost`` (cost dict of the pretraining the run started from; empty for
  scratch/ImageNet), ``pretrain_id``, ``replicate``, ``shared_gpu``.
* ``thresholds``: the suite's validation-accuracy thresholds; ``baseline``: the variant the others are
  compared against.
* ``settings``: the suite's ``[analysis]`` table as a dict (``None`` or ``{}`` where the suite has none):
  ``primary`` (endpoint, default ``"test_accuracy"``), ``alpha`` (default 0.05), ``equivalence`` (optional
  accuracy margin for a TOST, e.g. 0.01). Endpoints: ``"test_accuracy"``, ``"test_balanced_accuracy"``,
  ``"best_val_accuracy"``, and ``"<cost>_to:<threshold>"`` with cost one of ``epochs``, ``samples``,
  ``flops`` (the rows' ``train_flops``), ``device_seconds``, ``energy_joules``; the threshold must be one of
  ``thresholds``. Bad settings raise ``ValueError`` (this module imports no galbench module, so the caller
  turns it into a ``GalbenchError``). ``Settings.from_section`` parses the table alone.

``Analysis`` holds:

* ``settings``: the ``Settings`` used (``declared`` False where the suite had no ``primary``: the report must
  say that the primary endpoint was the default).
* ``confirmatory``: the family Holm adjusts: the primary endpoint, each arm against the baseline (at each
  training-set size ``train_size`` against the baseline at the same size). Each ``Comparison`` carries the
  raw p (``test.p_value``), ``p_adjusted`` and ``detected`` (adjusted p < alpha).
* ``exploratory``: every other endpoint (each accuracy, each cost metric to each threshold), same shape,
  unadjusted (``p_adjusted`` None, ``detected`` uses the raw p).
* ``arms``: per (variant, train_size): accuracy summaries and Kaplan-Meier estimates per endpoint.
* ``labels_saved`` (suites with several training-set sizes), ``costs`` (with break-even against the
  baseline), ``main_threshold`` (DESCRIPTIVE only: the highest threshold the baseline reached in at least
  half its runs; it looks at the data, so it is never used for a test), ``notes`` (plain sentences).

Open quantities are ``Bound`` values, never inf, nan or 0: a Kaplan-Meier median that is not reached is
``Bound(largest observed time, "at_least")``; a ratio whose baseline median is not reached is
``Bound(x, "at_most")``; not reached in either arm is ``Bound(None, "unknown", "not reached in either arm")``.

Choice of tests (documented in each function)
---------------------------------------------
* Time to a threshold: a permutation log-rank test conditional on the observed times and censoring
  (statistic: the usual standardised log-rank chi-square, so the observed statistic is the textbook one;
  its permutation distribution replaces the chi-square approximation, which is far too liberal at 3-10
  runs per arm). Exact enumeration of all C(n1+n2, n1) relabellings when that is <= EXACT_LIMIT, else
  MONTE_CARLO_RESAMPLES random relabellings with p = (b+1)/(B+1) and its Monte-Carlo standard error.
* Accuracy: an exact permutation test of the difference of mean accuracy over runs, two-sample (NOT paired
  by seed: seeds of different arms share nothing that makes a pair, arms may have different numbers of
  runs, and the two-sample design can reach lower p: with 5 vs 5 its floor is 2/252 = 0.0079, whereas a
  paired sign-flip test cannot go below 2/32 = 0.0625). It is conditional on the fixed test set (it tests
  seed-to-seed differences on these images). With one run per arm and per-image predictions it is
  McNemar's exact test on the discordant images. Welch's t-test and Hedges' g stay as information.
* The p-value of a test is never below what its design can reach: ``HypothesisTest.p_floor`` says that
  smallest reachable p (e.g. 0.1 for 3 vs 3), and a design whose floor exceeds alpha cannot detect anything.
* Accuracy CIs: the standard error of a two-level bootstrap (runs resampled within each arm, with the
  runs' deviations rescaled by sqrt(n/(n-1)) so the seed variance is not shrunk; then test galaxies
  resampled, the SAME galaxies for both arms since they are evaluated on the same images), and a Student t
  quantile with Welch-Satterthwaite degrees of freedom over the seed and image components. Without
  per-image predictions and labels, seeds only, and ``ci_method`` says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

MIN_SEEDS = 3  # Welch's t and Hedges' g (information only) need this many runs per arm
EXACT_LIMIT = 200_000  # enumerate every relabelling up to this many, else Monte-Carlo
MONTE_CARLO_RESAMPLES = 20_000
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
POWER = 0.8
ACCURACY_ENDPOINTS = ("test_accuracy", "test_balanced_accuracy", "best_val_accuracy")
COST_ENDPOINTS = {"epochs": "epochs", "samples": "samples", "flops": "train_flops",
                  "device_seconds": "device_seconds", "energy_joules": "energy_joules"}


@dataclass(frozen=True)
class Bound:
    """A number that may be known only from one side: exactly `value`, at least it, at most it, or unknown."""

    value: float | None
    side: str = "exact"  # "exact", "at_least", "at_most", "unknown" (value None)
    note: str = ""  # why it is open, e.g. "not reached in either arm"

    @property
    def is_open(self) -> bool:
        """True unless the value is known exactly."""
        return self.side != "exact"


@dataclass(frozen=True)
class Endpoint:
    """What is compared: an accuracy (higher is better) or a cost to reach a validation threshold."""

    text: str  # as written in the suite: "test_accuracy", "epochs_to:0.8", "flops_to:0.85"
    kind: str  # "accuracy" or "time"
    field: str  # results-row key: "test_accuracy", ... or the cost key "epochs", "train_flops", ...
    threshold: float | None = None

    @classmethod
    def parse(cls, text: str, thresholds=None) -> Endpoint:
        """Parse an endpoint name; ValueError naming the valid forms where it is not one."""
        raise NotImplementedError


@dataclass(frozen=True)
class Settings:
    """The suite's [analysis] table: the declared primary endpoint, alpha and an optional equivalence margin."""

    primary: Endpoint
    alpha: float = 0.05
    equivalence: float | None = None  # accuracy margin for TOST, e.g. 0.01
    declared: bool = True  # False where the suite declared no primary endpoint and the default was used

    @classmethod
    def from_section(cls, section: dict | None, thresholds=None) -> Settings:
        """Settings from the [analysis] table (None or {}: defaults, declared=False); ValueError on bad keys."""
        raise NotImplementedError


@dataclass(frozen=True)
class KaplanMeier:
    """Kaplan-Meier summary of times to an event (reaching a threshold), median computed exactly."""

    n: int
    n_reached: int
    median: Bound  # exact where S(t) <= 1/2 (exactly, from counts), else at_least the largest observed time
    reach_probability: float  # estimated probability of reaching it by the largest observed time
    times: tuple[float, ...] = ()  # distinct event times
    survival: tuple[float, ...] = ()  # P(not yet reached) just after each of `times`


@dataclass(frozen=True)
class HypothesisTest:
    """One test's outcome, with what the design could reach."""

    name: str  # "permutation log-rank", "permutation mean difference", "McNemar exact"
    statistic: float  # log-rank chi-square, mean difference, or discordant count (min of the two)
    p_value: float  # two-sided
    p_floor: float  # the smallest p this design can give with these data (exact) or 1/(B+1) (Monte-Carlo)
    exact: bool  # True: every relabelling enumerated (or exact binomial); False: Monte-Carlo
    resamples: int  # relabellings enumerated or drawn (0 for McNemar)
    monte_carlo_se: float | None = None  # sqrt(p(1-p)/B) for Monte-Carlo p-values


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests (TOST) that the accuracy difference lies within +-margin."""

    margin: float
    p_value: float  # the larger of the two one-sided p-values
    equivalent: bool  # p_value < alpha: the (1 - 2 alpha) CI lies inside (-margin, margin)
    ci: tuple[float, float]  # the (1 - 2 alpha) interval of the difference


@dataclass(frozen=True)
class DifferenceCI:
    """A difference of mean accuracy (variant - baseline) with its interval and where the uncertainty comes from."""

    difference: float
    low: float
    high: float
    se: float  # two-level bootstrap standard error (seeds and test galaxies)
    se_seeds: float | None  # seeds resampled, test images fixed (None with one run per arm)
    se_images: float | None  # test galaxies resampled, runs fixed (None without predictions and labels)
    df: float  # Welch-Satterthwaite degrees of freedom of the t quantile
    method: str  # e.g. "two-level bootstrap (seeds, then the same test galaxies for both arms)"


@dataclass(frozen=True)
class AccuracySummary:
    """One arm's accuracy on one metric over its runs, with a CI of the mean (same method as DifferenceCI)."""

    metric: str  # "test_accuracy", "test_balanced_accuracy", "best_val_accuracy"
    n: int
    mean: float
    iqm: float
    sd: float  # over runs (0 with one run)
    ci: tuple[float, float]
    ci_method: str
    values: tuple[float, ...]


@dataclass
class Comparison:
    """One arm against the baseline on one endpoint (at one training-set size)."""

    variant: str
    baseline: str
    endpoint: Endpoint
    train_size: int | None
    confirmatory: bool
    n: int
    baseline_n: int
    estimate: Bound  # accuracy: mean difference variant - baseline; time: ratio of KM medians variant / baseline
    ci: tuple[Bound, Bound]
    ci_method: str
    test: HypothesisTest | None  # None where nothing can be tested (an empty arm, no event in either arm)
    p_adjusted: float | None = None  # Holm over the confirmatory family; None for exploratory comparisons
    detected: bool = False  # (adjusted, for confirmatory) p < alpha
    mde: float | None = None  # accuracy: the smallest difference detected with 80% power (see mde_note)
    mde_note: str = ""  # how the MDE was computed, or why there is none
    equivalence: Equivalence | None = None
    # accuracy endpoints only
    difference_ci: DifferenceCI | None = None
    welch_p: float | None = None  # information only, never adjusted
    hedges_g: float | None = None
    # time endpoints only
    km: KaplanMeier | None = None
    baseline_km: KaplanMeier | None = None
    probability_of_improvement: float | None = None  # P(variant run faster), censored runs rank slowest


@dataclass
class ArmSummary:
    """One variant at one training-set size: its runs' accuracies and Kaplan-Meier estimates."""

    variant: str
    train_size: int | None
    n: int
    accuracy: dict[str, AccuracySummary] = field(default_factory=dict)  # by metric name
    km: dict[str, KaplanMeier] = field(default_factory=dict)  # by time endpoint text, e.g. "epochs_to:0.8"


@dataclass(frozen=True)
class LabelsSaved:
    """Labels the baseline needs to match an arm's mean accuracy at one training-set size."""

    variant: str
    train_size: int
    metric: str
    arm_accuracy: float
    baseline_labels: Bound  # at_least the largest size: "more than all"; at_most the smallest: "at most"
    ci: tuple[Bound, Bound]
    ci_method: str
    baseline_monotone: bool  # False: the baseline's mean curve dips somewhere (first crossing is used)


@dataclass(frozen=True)
class BreakEven:
    """After how many fine-tunes pretraining pays for itself (None and never=True: it never does)."""

    fine_tunes: int | None  # smallest k >= 1 with pretraining + k * fine_tune <= k * baseline
    exact: float | None  # pretraining / (baseline - fine_tune)
    never: bool


@dataclass(frozen=True)
class CostSummary:
    """One arm's cost (to the primary threshold, or of a full training) with a CI and break-even."""

    variant: str
    train_size: int | None
    metric: str  # "train_flops" or "device_seconds"
    scope: str  # "to 0.8" (KM median of cost to the threshold) or "full training" (mean of totals)
    estimate: Bound
    ci: tuple[Bound, Bound]
    ci_method: str
    pretraining: float | None  # mean full pretraining cost over the arm's distinct pretrainings; None: none
    break_even: BreakEven | None  # against the baseline at the same size; None for the baseline / no pretraining


@dataclass
class Analysis:
    """Everything a report shows; see the module docstring."""

    baseline: str
    variants: list[str]
    thresholds: list[float]
    train_sizes: list[int | None]
    settings: Settings
    confirmatory: list[Comparison] = field(default_factory=list)
    exploratory: list[Comparison] = field(default_factory=list)
    arms: list[ArmSummary] = field(default_factory=list)
    labels_saved: list[LabelsSaved] = field(default_factory=list)
    costs: list[CostSummary] = field(default_factory=list)
    main_threshold: float | None = None  # descriptive only, chosen after seeing the baseline's results
    notes: list[str] = field(default_factory=list)


def analyse(runs: list[dict], thresholds: list[float], baseline: str, settings: dict | None = None,
            seed: int = 0) -> Analysis:
    """Compare every arm with the baseline: the confirmatory family (Holm), exploratory rest, labels, costs."""
    raise NotImplementedError


def kaplan_meier(times, reached) -> KaplanMeier:
    """Kaplan-Meier estimate for times (reached=True) and censoring totals (reached=False); exact median."""
    raise NotImplementedError


def logrank_statistic(times_a, reached_a, times_b, reached_b) -> float | None:
    """The log-rank chi-square statistic (None where neither arm has an event)."""
    raise NotImplementedError


def permutation_logrank(times_a, reached_a, times_b, reached_b, seed: int = 0) -> HypothesisTest | None:
    """Two-sided permutation log-rank test, conditional on the pooled times and censoring."""
    raise NotImplementedError


def permutation_mean_difference(a, b, seed: int = 0) -> HypothesisTest:
    """Two-sided two-sample permutation test of mean(a) - mean(b) (exact up to EXACT_LIMIT relabellings)."""
    raise NotImplementedError


def mcnemar_exact(correct_a, correct_b) -> HypothesisTest:
    """McNemar's exact test on paired per-image correctness: binomial on the discordant pairs."""
    raise NotImplementedError


def km_median_ratio(times_v, reached_v, times_b, reached_b, seed: int = 0) -> tuple[Bound, tuple[Bound, Bound]]:
    """Ratio of KM medians (variant / baseline) with a percentile bootstrap CI recomputing KM within each arm."""
    raise NotImplementedError


def accuracy_difference_ci(variant_values, baseline_values, variant_predictions=None, baseline_predictions=None,
                           labels=None, balanced: bool = False, seed: int = 0) -> DifferenceCI:
    """Mean accuracy difference with a two-level (seeds, then shared test galaxies) bootstrap t interval."""
    raise NotImplementedError


def accuracy_summary(metric: str, values, predictions=None, labels=None, seed: int = 0) -> AccuracySummary:
    """One arm's mean accuracy with the same two-level bootstrap t interval as accuracy_difference_ci."""
    raise NotImplementedError


def minimum_detectable_effect(se: float, df: float, alpha: float, power: float = POWER) -> float:
    """Smallest true difference a two-sided level-alpha test detects with `power`: (t_{1-a/2} + t_power) * se."""
    raise NotImplementedError


def tost(difference: float, se: float, df: float, margin: float, alpha: float) -> Equivalence:
    """Two one-sided t tests of |difference| < margin (statsmodels' ttost_ind given the same se and df)."""
    raise NotImplementedError


def labels_saved(sizes, baseline_accuracy, arm_accuracy: float) -> Bound:
    """Labels the baseline needs to reach `arm_accuracy`, interpolated linearly in log size (first crossing)."""
    raise NotImplementedError


def break_even(pretraining_cost: float, fine_tune_cost: float, baseline_cost: float) -> BreakEven:
    """Fine-tunes after which pretraining once plus k cheaper fine-tunes costs no more than k baseline trainings."""
    raise NotImplementedError


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment; None entries (not assessed) stay nan."""
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


def hedges_g(a, b) -> float:
    """Standardised mean difference (a - b) with the small-sample correction."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n1, n2 = a.size, b.size
    pooled = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    if pooled == 0:
        return 0.0 if a.mean() == b.mean() else float(np.sign(a.mean() - b.mean()) * np.inf)
    correction = 1 - 3 / (4 * (n1 + n2) - 9)
    return float((a.mean() - b.mean()) / pooled * correction)


def interquartile_mean(values) -> float:
    """Mean of the middle 50% (scipy's trim_mean with 25% cut from each end)."""
    return float(stats.trim_mean(np.asarray(values, float), 0.25))


# --- the previous version, kept until the report has moved to `analyse` (removed afterwards) ----------------



@dataclass(frozen=True)
class KaplanMeierV1:
    """Kaplan-Meier summary of times to an event (reaching a threshold)."""

    n: int
    n_reached: int
    median: float  # inf where fewer than half are estimated to reach it
    reach_probability: float  # estimated probability of reaching it by the largest observed time
    times: tuple[float, ...] = ()
    survival: tuple[float, ...] = ()  # P(not yet reached) just after each of `times`


def kaplan_meier_v1(times, reached) -> KaplanMeierV1:
    """Kaplan-Meier estimate for times (reached=True) and censoring totals (reached=False)."""
    times = np.asarray(times, dtype=float)
    reached = np.asarray(reached, dtype=bool)
    n, n_reached = times.size, int(reached.sum())
    if n_reached == 0:
        return KaplanMeierV1(n, 0, float("inf"), 0.0)
    data = stats.CensoredData(uncensored=times[reached], right=times[~reached])
    sf = stats.ecdf(data).sf
    quantiles, probabilities = np.asarray(sf.quantiles), np.asarray(sf.probabilities)
    below = np.flatnonzero(probabilities <= 0.5)
    median = float(quantiles[below[0]]) if below.size else float("inf")
    return KaplanMeierV1(n, n_reached, median, float(1 - probabilities[-1]), tuple(quantiles.tolist()),
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



def mean_ci(values, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (nan with fewer than 2 values)."""
    values = np.asarray(values, float)
    if values.size < 2 or np.ptp(values) == 0:
        return (float(values.mean()), float(values.mean())) if values.size else (float("nan"), float("nan"))
    result = stats.bootstrap((values,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)




@dataclass
class ThresholdComparison:
    """One variant against the baseline at one threshold, for one cost metric."""

    variant: str
    threshold: float
    metric: str
    km: KaplanMeierV1
    baseline_km: KaplanMeierV1
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
class AnalysisV1:
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
    km, base_km = kaplan_meier_v1(times, reached), kaplan_meier_v1(base_times, base_reached)
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


def analyse_v1(runs: list[dict], thresholds: list[float], baseline: str, metric: str = "epochs",
            seed: int = 0) -> AnalysisV1:
    """Compare every variant with the baseline over a suite's results rows (see runner.write_results)."""
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    if baseline not in variants:
        raise ValueError(f"baseline {baseline!r} has no runs")
    analysis = AnalysisV1(baseline, variants, thresholds, metric)

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


def _adjust_all(analysis: AnalysisV1) -> None:
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
        medians[metric] = kaplan_meier_v1(values, [row["reached"] for row in rows]).median
    return medians
