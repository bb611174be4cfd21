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
* The p-value of a test is never below what its design can reach: ``HypothesisTest.p_floor`` is the
  smallest p these data allow (e.g. 0.1 for 3 vs 3; ties in the data can raise it), and a design whose
  floor is not below alpha (alpha / m for the confirmatory family) cannot detect anything: the MDE says so.
* Accuracy CIs (``DifferenceCI``, ``AccuracySummary``): a two-level bootstrap. Each replicate adds two
  independent draws: the test galaxies resampled, the SAME galaxies for every arm since all are evaluated
  on the same images, and the runs resampled within each arm, their deviations scaled by sqrt(n/(n-1)) so
  the seed variance is not shrunk. The run-by-image interaction sits in both draws; its share (two-way
  ANOVA residual of the runs x images correctness) is taken off once. The interval is estimate +- t x SE
  with Welch-Satterthwaite degrees of freedom over the seed parts (s^2/n, n - 1 df per arm) and the galaxy
  part (images - 1 df). Simulated (5 seeds per arm, 600 galaxies, seed and galaxy variation) it covers
  0.94-0.97 at nominal 0.95 where the old percentile bootstrap of 5 means covered 0.69-0.75. Without
  per-image predictions and labels for every run, seeds only, and ``ci_method`` says so.
* Minimum detectable effect (accuracy): the true difference the permutation test detects with power 0.8
  at a = alpha / m for the confirmatory family (Holm's first step, so the power holds whatever the other
  p-values) or alpha for exploratory comparisons, in units of the SE over seeds (the seed part, because the
  permutation test compares runs on the fixed test set). For exact designs up to MDE_SIMULATION_LIMIT
  relabellings the multiple of the SE is simulated for the exact test (``permutation_mde_factor``): the t
  formula (t_{1-a/2, df} + t_{0.8, df}) gives it too little power where a is near the design's smallest p
  (4 vs 4 at 0.05: 0.63; 5 vs 5 at 0.05 / 6: 0.69). Larger designs use the t formula with Welch's df.
  Not computed for time-to-threshold endpoints (their median-ratio interval says what was excluded).
* Equivalence (``[analysis] equivalence``): TOST of the accuracy difference against +-margin at alpha,
  with the two-level SE and df above (statsmodels' ttost_ind given the same SE and df).
* Labels saved: the baseline's mean accuracy per training-set size, linear in log size between sizes;
  the FIRST crossing of the arm's mean accuracy counts (a later dip of a non-monotone baseline does not
  matter; ``baseline_monotone`` flags it). Percentile bootstrap: seeds within each (arm, size) cell and,
  where every run has predictions and labels, the same test galaxies for all cells (else seeds only).
* Costs: to the primary threshold, the Kaplan-Meier median cost with a percentile bootstrap of runs
  (open where resampled medians are not reached); otherwise the mean of the runs' totals with a t
  interval. Break-even: ``break_even(pretraining, fine-tune, baseline)``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import stats

MIN_SEEDS = 3  # Welch's t and Hedges' g (information only) need this many runs per arm
EXACT_LIMIT = 200_000  # enumerate every relabelling up to this many, else Monte-Carlo
MONTE_CARLO_RESAMPLES = 20_000
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
POWER = 0.8
MDE_SIMULATION_LIMIT = 5000  # exact designs up to this many relabellings (7 vs 7: 3,432) get a simulated MDE
MDE_EXPERIMENTS = 2000  # simulated experiments per power evaluation of the MDE
ACCURACY_ENDPOINTS = ("test_accuracy", "test_balanced_accuracy", "best_val_accuracy")
COST_ENDPOINTS = {"epochs": "epochs", "samples": "samples", "flops": "train_flops",
                  "device_seconds": "device_seconds", "energy_joules": "energy_joules"}
COST_SUMMARY_METRICS = ("train_flops", "device_seconds")
_CHUNK = 32_768  # relabellings per block: bounds the memory of the vectorised statistics


# --- values that may be open --------------------------------------------------------------------------------

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


def _bound_from_ends(low: float, high: float, note: str) -> Bound:
    """A quantity known to lie in [low, high] (0 and inf meaning no bound on that side) as a Bound."""
    if low == high:
        return Bound(float(low))
    if np.isinf(high) and low > 0:
        return Bound(float(low), "at_least", note)
    if low == 0 and np.isfinite(high):
        return Bound(float(high), "at_most", note)
    return Bound(None, "unknown", note)


def _interval_from_ends(low, high, note: str, confidence: float = CONFIDENCE) -> tuple[Bound, Bound]:
    """Percentile interval of bootstrap replicates that are each known only to lie in [low, high].

    The interval's lower end lies between the (1-c)/2 quantiles of the replicates' lower and upper ends,
    its upper end between their (1+c)/2 quantiles; where those differ the end is open, reported on its
    conservative side (a lower end "at least x", an upper end "at most x", or beyond x where unbounded).
    """
    low, high = np.asarray(low, float), np.asarray(high, float)
    tail = (1 - confidence) / 2
    lower_low, lower_high = (float(np.quantile(x, tail, method="lower")) for x in (low, high))
    upper_low, upper_high = (float(np.quantile(x, 1 - tail, method="higher")) for x in (low, high))
    if lower_low == lower_high:
        lower = Bound(lower_low)
    elif lower_low > 0:
        lower = Bound(lower_low, "at_least", note)
    elif np.isfinite(lower_high):
        lower = Bound(lower_high, "at_most", note)
    else:
        lower = Bound(None, "unknown", note)
    if upper_low == upper_high:
        upper = Bound(upper_high)
    elif np.isfinite(upper_high):
        upper = Bound(upper_high, "at_most", note)
    elif upper_low > 0:
        upper = Bound(upper_low, "at_least", note)
    else:
        upper = Bound(None, "unknown", note)
    return lower, upper


# --- endpoints and settings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """What is compared: an accuracy (higher is better) or a cost to reach a validation threshold."""

    text: str  # as written in the suite, normalised: "test_accuracy", "epochs_to:0.8", "flops_to:0.85"
    kind: str  # "accuracy" or "time"
    field: str  # results-row key: "test_accuracy", ... or the cost key "epochs", "train_flops", ...
    threshold: float | None = None

    @classmethod
    def parse(cls, text: str, thresholds=None) -> Endpoint:
        """Parse an endpoint name; ValueError naming the valid forms where it is not one."""
        text = str(text).strip()
        if text in ACCURACY_ENDPOINTS:
            return cls(text, "accuracy", text)
        name, separator, value = text.partition("_to:")
        forms = (f"{', '.join(ACCURACY_ENDPOINTS)}, or COST_to:THRESHOLD with COST one of "
                 f"{', '.join(COST_ENDPOINTS)} (e.g. epochs_to:0.8)")
        if not separator or name not in COST_ENDPOINTS:
            raise ValueError(f"unknown endpoint {text!r}: use {forms}")
        try:
            threshold = float(value)
        except ValueError:
            raise ValueError(f"endpoint {text!r}: {value!r} is not a threshold; use {forms}") from None
        if thresholds is not None:
            match = [t for t in thresholds if math.isclose(t, threshold, abs_tol=1e-12)]
            if not match:
                raise ValueError(f"endpoint {text!r}: threshold {threshold:g} is not one of the suite's "
                                 f"thresholds ({', '.join(f'{t:g}' for t in thresholds)})")
            threshold = match[0]
        return cls(f"{name}_to:{threshold:g}", "time", COST_ENDPOINTS[name], threshold)


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
        section = dict(section or {})
        unknown = sorted(set(section) - {"primary", "alpha", "equivalence"})
        if unknown:
            raise ValueError(f"[analysis] has unknown keys {', '.join(unknown)}: use primary, alpha, equivalence")
        alpha = section.get("alpha", 0.05)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise ValueError(f"[analysis] alpha must be a number between 0 and 1, not {alpha!r}")
        margin = section.get("equivalence")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                                   or not 0 < margin < 1):
            raise ValueError(f"[analysis] equivalence must be an accuracy margin between 0 and 1 (e.g. 0.01), "
                             f"not {margin!r}")
        primary = Endpoint.parse(section.get("primary", "test_accuracy"), thresholds)
        return cls(primary, float(alpha), None if margin is None else float(margin), "primary" in section)


# --- Kaplan-Meier -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KaplanMeier:
    """Kaplan-Meier summary of times to an event (reaching a threshold), median computed exactly."""

    n: int
    n_reached: int
    median: Bound  # exact where S(t) <= 1/2 (exactly, from counts), else at_least the largest observed time
    reach_probability: float  # estimated probability of reaching it by the largest observed time
    times: tuple[float, ...] = ()  # distinct event times
    survival: tuple[float, ...] = ()  # P(not yet reached) just after each of `times`


def _km_medians(times, reached) -> tuple[np.ndarray, np.ndarray]:
    """Exact Kaplan-Meier medians of each row: (median, or the largest time where not reached; reached?).

    Sorted by time with events before censorings at a tie, the product-limit factor of a tied group
    (r - d) / r telescopes into one factor (r - i - 1) / (r - i) per event, with n - i at risk at sorted
    position i; so S after position i is a product of integers. The median is the first event time with
    S <= 1/2. Floats decide away from 1/2; within 1e-9 of it, Python integers decide exactly.
    """
    times, reached = np.atleast_2d(np.asarray(times, float)), np.atleast_2d(np.asarray(reached, bool))
    rows, n = times.shape
    order = np.lexsort((~reached, times), axis=-1)
    times, reached = np.take_along_axis(times, order, -1), np.take_along_axis(reached, order, -1)
    at_risk = n - np.arange(n)
    with np.errstate(divide="ignore"):
        log_survival = np.cumsum(np.where(reached, np.log((at_risk - 1) / at_risk), 0.0), axis=-1)
    half = math.log(0.5)
    below = reached & (log_survival <= half)
    for row, column in zip(*np.nonzero(reached & (np.abs(log_survival - half) < 1e-9)), strict=True):
        events = np.flatnonzero(reached[row, :column + 1])
        below[row, column] = 2 * math.prod(int(n - i - 1) for i in events) <= math.prod(int(n - i) for i in events)
    found = below.any(-1)
    first = below.argmax(-1)
    return np.where(found, times[np.arange(rows), first], times[:, -1]), found


def kaplan_meier(times, reached) -> KaplanMeier:
    """Kaplan-Meier estimate for times (reached=True) and censoring totals (reached=False); exact median."""
    times, reached = np.asarray(times, float).ravel(), np.asarray(reached, bool).ravel()
    if times.size == 0:
        return KaplanMeier(0, 0, Bound(None, "unknown", "no runs"), 0.0)
    event_times = np.unique(times[reached])
    at_risk = (times[None, :] >= event_times[:, None]).sum(1)
    events = ((times[None, :] == event_times[:, None]) & reached).sum(1)
    survival = np.cumprod(1 - events / at_risk)
    median, found = _km_medians(times, reached)
    return KaplanMeier(int(times.size), int(reached.sum()),
                       Bound(float(median[0])) if found[0] else Bound(float(median[0]), "at_least", "not reached"),
                       float(1 - survival[-1]) if survival.size else 0.0,
                       tuple(event_times.tolist()), tuple(survival.tolist()))


# --- exact and Monte-Carlo permutation tests ----------------------------------------------------------------

@dataclass(frozen=True)
class HypothesisTest:
    """One test's outcome, with what the design could reach."""

    name: str  # "permutation log-rank", "permutation mean difference", "McNemar exact"
    statistic: float  # log-rank chi-square, |mean difference|, or McNemar's min(discordant counts)
    p_value: float  # two-sided
    p_floor: float  # the smallest p this design can give with these data (exact) or 1/(B+1) (Monte-Carlo)
    exact: bool  # True: every relabelling enumerated (or exact binomial); False: Monte-Carlo
    resamples: int  # relabellings enumerated or drawn (0 for McNemar)
    monte_carlo_se: float | None = None  # sqrt(p(1-p)/B) for Monte-Carlo p-values


@lru_cache(maxsize=4)
def _all_memberships(n_total: int, n_a: int) -> np.ndarray:
    """Every choice of n_a of n_total runs as arm A, as a read-only boolean (C(n_total, n_a), n_total) matrix."""
    count = math.comb(n_total, n_a)
    chosen = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n_total), n_a)),
                         dtype=np.intp, count=count * n_a).reshape(count, n_a)
    membership = np.zeros((count, n_total), bool)
    np.put_along_axis(membership, chosen, True, axis=1)
    membership.flags.writeable = False
    return membership


def _permutation_test(name: str, statistic, n_a: int, n_total: int, seed: int) -> HypothesisTest:
    """Two-sided p of statistic(membership) >= observed, the observed arm A being the first n_a runs.

    `statistic` maps a boolean (P, n_total) membership matrix to P values, larger meaning more extreme.
    Values within a relative 1e-9 of the observed count as ties (they are equal in exact arithmetic).
    """
    observed_membership = np.zeros((1, n_total), bool)
    observed_membership[0, :n_a] = True
    observed = float(statistic(observed_membership)[0])
    count = math.comb(n_total, n_a)
    if count <= EXACT_LIMIT:
        memberships = _all_memberships(n_total, n_a)
        values = np.concatenate([statistic(memberships[i:i + _CHUNK]) for i in range(0, count, _CHUNK)])
        tolerance = 1e-9 * max(float(np.abs(values).max()), 1e-300)
        p_value = np.count_nonzero(values >= observed - tolerance) / count
        p_floor = np.count_nonzero(values >= values.max() - tolerance) / count
        return HypothesisTest(name, observed, float(p_value), float(p_floor), True, count)
    rng = np.random.default_rng(seed)
    values = np.concatenate([
        statistic(rng.permuted(np.repeat(observed_membership, min(_CHUNK, MONTE_CARLO_RESAMPLES - i), 0), axis=1))
        for i in range(0, MONTE_CARLO_RESAMPLES, _CHUNK)])
    tolerance = 1e-9 * max(float(np.abs(values).max()), abs(observed), 1e-300)
    exceed = np.count_nonzero(values >= observed - tolerance)
    p_value = float(exceed + 1) / (MONTE_CARLO_RESAMPLES + 1)
    return HypothesisTest(name, observed, p_value, 1 / (MONTE_CARLO_RESAMPLES + 1), False, MONTE_CARLO_RESAMPLES,
                          math.sqrt(p_value * (1 - p_value) / MONTE_CARLO_RESAMPLES))


@dataclass(frozen=True)
class _LogrankDesign:
    """The pooled sample sorted by time, and where each distinct event time's runs start and end in it."""

    order: np.ndarray  # sorting permutation of the pooled runs
    reached: np.ndarray  # reached, in sorted order
    start: np.ndarray  # per event time: first sorted position with time >= it
    stop: np.ndarray  # per event time: first sorted position with time > it
    at_risk: np.ndarray  # per event time: runs at risk
    events: np.ndarray  # per event time: runs reaching the threshold then


def _logrank_design(times, reached) -> _LogrankDesign:
    """Risk sets and event counts of the pooled sample at each distinct event time."""
    order = np.argsort(times, kind="stable")
    sorted_times, sorted_reached = times[order], reached[order]
    event_times = np.unique(sorted_times[sorted_reached])
    start = np.searchsorted(sorted_times, event_times, side="left")
    stop = np.searchsorted(sorted_times, event_times, side="right")
    events = np.asarray([sorted_reached[a:b].sum() for a, b in zip(start, stop, strict=True)], float)
    return _LogrankDesign(order, sorted_reached, start, stop, (times.size - start).astype(float), events)


def _logrank_chi2(membership, design: _LogrankDesign) -> np.ndarray:
    """Log-rank chi-square (O - E)^2 / V of arm A for each row of a membership matrix.

    Counts per event time come from cumulative sums over the runs sorted by time (no matrix products:
    multithreaded BLAS on small products is slow on a shared machine).
    """
    arm = membership[:, design.order]
    members = np.zeros((arm.shape[0], arm.shape[1] + 1), np.int32)
    np.cumsum(arm, axis=1, out=members[:, 1:])
    arm_events = np.zeros_like(members)
    np.cumsum(arm & design.reached, axis=1, out=arm_events[:, 1:])
    share = (members[:, -1:] - members[:, design.start]) / design.at_risk
    observed = arm_events[:, design.stop] - arm_events[:, design.start]
    observed_minus_expected = (observed - design.events * share).sum(1)
    ties = np.where(design.at_risk > 1, design.events * (design.at_risk - design.events)
                    / np.maximum(design.at_risk - 1, 1), 0.0)
    variance = (share * (1 - share) * ties).sum(1)
    safe = np.where(variance > 0, variance, 1.0)
    return np.where(variance > 0, observed_minus_expected ** 2 / safe, 0.0)


def logrank_statistic(times_a, reached_a, times_b, reached_b) -> float | None:
    """The log-rank chi-square statistic (None where neither arm has an event)."""
    times = np.concatenate([np.asarray(times_a, float), np.asarray(times_b, float)])
    reached = np.concatenate([np.asarray(reached_a, bool), np.asarray(reached_b, bool)])
    if not reached.any():
        return None
    membership = (np.arange(times.size) < len(times_a))[None, :]
    return float(_logrank_chi2(membership, _logrank_design(times, reached))[0])


def permutation_logrank(times_a, reached_a, times_b, reached_b, seed: int = 0) -> HypothesisTest | None:
    """Two-sided permutation log-rank test, conditional on the pooled times and censoring.

    Arm labels are relabelled over the pooled (time, reached) pairs; the statistic is the log-rank
    chi-square. Exact over all C(n_a + n_b, n_a) relabellings up to EXACT_LIMIT, else Monte-Carlo.
    None where an arm is empty or no run of either arm reached the threshold (nothing to compare).
    """
    times = np.concatenate([np.asarray(times_a, float), np.asarray(times_b, float)])
    reached = np.concatenate([np.asarray(reached_a, bool), np.asarray(reached_b, bool)])
    n_a = len(times_a)
    if not reached.any() or n_a == 0 or n_a == times.size:
        return None
    # the log-rank statistic depends on the times only through their order: equal orders share one test
    ranks = np.unique(times, return_inverse=True)[1]
    return _cached_logrank(tuple(ranks.tolist()), tuple(reached.tolist()), n_a, seed)


@lru_cache(maxsize=256)
def _cached_logrank(ranks: tuple, reached: tuple, n_a: int, seed: int) -> HypothesisTest:
    """The permutation log-rank test of one pattern of ranks and censoring (shared by equal patterns)."""
    design = _logrank_design(np.asarray(ranks, float), np.asarray(reached, bool))
    return _permutation_test("permutation log-rank", lambda m: _logrank_chi2(m, design), n_a, len(ranks), seed)


def permutation_mean_difference(a, b, seed: int = 0) -> HypothesisTest:
    """Two-sided two-sample permutation test of mean(a) - mean(b) (exact up to EXACT_LIMIT relabellings)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0 or b.size == 0:
        raise ValueError("a permutation test needs at least one value in each arm")
    pooled = np.concatenate([a, b])
    total = pooled.sum()

    def difference(membership):
        sums = np.where(membership, pooled, 0.0).sum(1)
        return np.abs(sums / a.size - (total - sums) / b.size)

    return _permutation_test("permutation mean difference", difference, a.size, pooled.size, seed)


def mcnemar_exact(correct_a, correct_b) -> HypothesisTest:
    """McNemar's exact test on paired per-image correctness: binomial on the discordant pairs."""
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError("McNemar's test needs both runs' predictions on the same images")
    only_a, only_b = int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())
    discordant = only_a + only_b
    if discordant == 0:
        return HypothesisTest("McNemar exact", 0.0, 1.0, 1.0, True, 0)
    smaller = min(only_a, only_b)
    p_value = min(1.0, 2 * float(stats.binom.cdf(smaller, discordant, 0.5)))
    return HypothesisTest("McNemar exact", float(smaller), p_value, min(1.0, 2 * 0.5 ** discordant), True, 0)


# --- effect sizes -------------------------------------------------------------------------------------------

def _ratio_ends(median_v, found_v, median_b, found_b) -> tuple[np.ndarray, np.ndarray]:
    """What each median ratio can be, [low, high], given medians that are exact (found) or lower bounds."""
    median_v, median_b = np.asarray(median_v, float), np.asarray(median_b, float)
    positive = median_b > 0
    ratio = np.divide(median_v, median_b, out=np.zeros_like(median_v), where=positive)
    return np.where(found_b & positive, ratio, 0.0), np.where(found_v & positive, ratio, np.inf)


def km_median_ratio(times_v, reached_v, times_b, reached_b, seed: int = 0,
                    resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[Bound, tuple[Bound, Bound]]:
    """Ratio of KM medians (variant / baseline) with a percentile bootstrap CI recomputing KM within each arm.

    Runs are resampled within each arm. A median not reached is only known to exceed the largest time,
    so the ratio is then open ("at_least" where the variant's is not reached, "at_most" where the
    baseline's is not, unknown where neither is); the interval ends are open where replicates are.
    """
    arms = [(np.asarray(times_v, float), np.asarray(reached_v, bool)),
            (np.asarray(times_b, float), np.asarray(reached_b, bool))]
    if min(times.size for times, _ in arms) == 0:
        unknown = Bound(None, "unknown", "an arm has no runs")
        return unknown, (unknown, unknown)
    (median_v, found_v), (median_b, found_b) = (_km_medians(t, r) for t, r in arms)
    note = "not reached in either arm" if not (found_v[0] or found_b[0]) else "median not reached"
    if found_b[0] and median_b[0] == 0:
        note = "baseline median is 0"
    estimate = _bound_from_ends(*(float(x[0]) for x in _ratio_ends(median_v, found_v, median_b, found_b)), note)
    if min(times.size for times, _ in arms) < 2:
        unknown = Bound(None, "unknown", "one run in an arm: no interval")
        return estimate, (unknown, unknown)
    rng = np.random.default_rng(seed)
    replicates = []
    for times, reached in arms:
        index = rng.integers(0, times.size, (resamples, times.size))
        replicates.append(_km_medians(times[index], reached[index]))
    (median_v, found_v), (median_b, found_b) = replicates
    return estimate, _interval_from_ends(*_ratio_ends(median_v, found_v, median_b, found_b),
                                         "medians not reached in some resamples")


def probability_of_improvement(times_v, reached_v, times_b, reached_b) -> float | None:
    """P(a variant run is faster than a baseline run) + P(tie) / 2, runs that never got there ranking slowest."""
    v = np.where(np.asarray(reached_v, bool), np.asarray(times_v, float), np.inf)
    b = np.where(np.asarray(reached_b, bool), np.asarray(times_b, float), np.inf)
    if v.size == 0 or b.size == 0:
        return None
    return float(((v[:, None] < b[None, :]) + 0.5 * (v[:, None] == b[None, :])).mean())


@dataclass(frozen=True)
class DifferenceCI:
    """A difference of mean accuracy (variant - baseline), its interval and where the uncertainty comes from."""

    difference: float
    low: float | None  # None where nothing is estimable (one run per arm and no per-image predictions)
    high: float | None
    se: float  # two-level bootstrap standard error (seeds and test galaxies)
    se_seeds: float | None  # seed-to-seed part, s_v^2/n_v + s_b^2/n_b (None with one run per arm)
    se_images: float | None  # test galaxies resampled, runs fixed (None without predictions and labels)
    df: float  # Welch-Satterthwaite degrees of freedom of the t quantile (inf: normal)
    df_seeds: float | None  # Welch's degrees of freedom of the seed part alone (used by the MDE)
    method: str


@dataclass(frozen=True)
class AccuracySummary:
    """One arm's accuracy on one metric over its runs, with a CI of the mean (same method as DifferenceCI)."""

    metric: str  # "test_accuracy", "test_balanced_accuracy", "best_val_accuracy"
    n: int
    mean: float
    iqm: float
    sd: float  # over runs (0 with one run)
    ci: tuple[float, float] | None  # None with one run and no per-image predictions
    ci_method: str
    values: tuple[float, ...]


def _correct_and_values(values, predictions, labels, balanced: bool):
    """Per-image correctness (runs x images) and the runs' metric recomputed from it, where both exist."""
    values = np.asarray(values, float)
    if predictions is None or labels is None:
        return None, values
    labels = np.asarray(labels)
    correct = np.asarray(predictions) == labels[None, :]
    if correct.shape != (values.size, labels.size):
        raise ValueError("per-image predictions must be runs x test images, in the test labels' order")
    return correct, _metric_on(np.ones((1, labels.size)), correct, labels, balanced)[0]


def _metric_on(weights, correct, labels, balanced: bool) -> np.ndarray:
    """Each run's (balanced) accuracy on weighted test images: weights (B, images) -> (B, runs)."""
    correct = correct.astype(float)
    if not balanced:
        return np.einsum("bi,ri->br", weights, correct) / weights.sum(1, keepdims=True)
    masks = (labels[:, None] == np.unique(labels)[None, :]).astype(float)  # images x classes
    hits = np.einsum("bi,rik->brk", weights, correct[:, :, None] * masks[None, :, :])
    counted = np.einsum("bi,ik->bk", weights, masks)[:, None, :]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from a resample is left out
        return np.nanmean(hits / counted, axis=2)


@lru_cache(maxsize=2)
def _galaxy_weights(seed: int, resamples: int, images: int) -> np.ndarray:
    """Bootstrap weights (resamples x images): how often each test galaxy is drawn; the same for one seed."""
    rng = np.random.default_rng([seed, images])
    drawn = rng.integers(0, images, (resamples, images)) + images * np.arange(resamples)[:, None]
    weights = np.bincount(drawn.ravel(), minlength=resamples * images).reshape(resamples, images).astype(float)
    weights.flags.writeable = False
    return weights


def _two_level(cells, labels, balanced: bool, seed: int, resamples: int):
    """Bootstrap replicates of each cell's mean over runs: (replicates (B, cells), galaxies-only (B, cells)).

    Cells are (values, correct or None). A replicate adds two independent draws: the test galaxies
    resampled, the same galaxies for every cell since all are evaluated on the same images (all runs
    kept); and the runs resampled within each cell on the actual test set, their deviations scaled by
    sqrt(n/(n-1)) so that the bootstrap does not shrink the seed variance. The variance is then the
    sum of the seed and test-set parts, in both of which the run-by-image interaction sits (callers that
    need the SE take it off once). Without per-image correctness for every cell, only runs are resampled
    (galaxies-only is None). Every call with one seed draws the same galaxies, so all arms and
    comparisons share them.
    """
    rng = np.random.default_rng(seed)
    with_images = labels is not None and all(correct is not None for _, correct in cells)
    weights = _galaxy_weights(seed, resamples, len(labels)) if with_images else None
    replicates, galaxies_only = [], []
    for values, correct in cells:
        centre = _metric_on(weights, correct, labels, balanced).mean(1) if with_images else \
            np.full(resamples, values.mean())
        deviation = 0.0
        if values.size > 1:
            drawn = values[rng.integers(0, values.size, (resamples, values.size))].mean(1)
            deviation = math.sqrt(values.size / (values.size - 1)) * (drawn - values.mean())
        replicates.append(centre + deviation)
        galaxies_only.append(centre)
    return np.stack(replicates, 1), (np.stack(galaxies_only, 1) if with_images else None)


def _satterthwaite(components) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variance components [(variance, df), ...]."""
    components = [(v, df) for v, df in components if df > 0 and v > 0]
    total = sum(v for v, _ in components)
    if total == 0:
        return math.inf
    return total ** 2 / sum(v ** 2 / df for v, df in components)


def _method(with_images: bool, runs: tuple[int, ...]) -> str:
    """How an accuracy interval was made, in words the report can print."""
    if with_images:
        text = "two-level bootstrap (seeds, then test galaxies, the same for every arm), t interval"
    else:
        text = "bootstrap of seeds only (no per-image test predictions and labels), t interval"
    if max(runs) == 1:
        text += "; one run per arm: seed variation not estimable, the interval covers test-set sampling only"
    elif min(runs) == 1:
        text += "; an arm with one run borrows the other arm's seed variance"
    return text


def _interaction_variance(correct, labels, balanced: bool) -> float:
    """Variance of a cell's mean metric due to the run-by-image interaction (two-way ANOVA residual)."""
    runs = correct.shape[0]
    if runs < 2:
        return 0.0
    groups = [labels == label for label in np.unique(labels)] if balanced else [np.ones(labels.size, bool)]
    total = 0.0
    for mask in groups:
        x = correct[:, mask].astype(float)
        if x.shape[1] < 2:
            continue
        residual = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
        mean_square = float((residual ** 2).sum()) / ((runs - 1) * (x.shape[1] - 1))
        total += mean_square / (runs * x.shape[1]) / len(groups) ** 2
    return total


def _bootstrap_interval(cells, signs, labels, balanced: bool, seed: int, resamples: int) -> DifferenceCI:
    """Interval of sum(sign x cell mean) from the two-level bootstrap; see accuracy_difference_ci."""
    replicates, galaxies_only = _two_level(cells, labels, balanced, seed, resamples)
    signs = np.asarray(signs, float)
    estimate = float(sum(sign * values.mean() for sign, (values, _) in zip(signs, cells, strict=True)))
    sizes = [values.size for values, _ in cells]
    own = [float(np.var(values, ddof=1)) if values.size > 1 else None for values, _ in cells]
    known = [v for v in own if v is not None]
    # a cell with one run shows no seed variance: it borrows the others' (pooled), and the bootstrap,
    # which cannot resample it, gets that part added
    borrowed = float(np.mean(known)) if known else None
    seed_parts = [((v if v is not None else borrowed) / n, n - 1) for v, n in zip(own, sizes, strict=True)] \
        if known else []
    variance = float(np.var(replicates @ signs, ddof=1))
    variance += sum(borrowed / n for v, n in zip(own, sizes, strict=True) if v is None and known)
    se_images = None if galaxies_only is None else float(np.std(galaxies_only @ signs, ddof=1))
    if se_images is not None:  # the seed and the test-set parts both contain it: count it once
        variance -= sum(_interaction_variance(correct, labels, balanced) for _, correct in cells)
    se_seeds = math.sqrt(sum(v for v, _ in seed_parts)) if known else None
    variance = max(variance, (se_seeds or 0.0) ** 2, (se_images or 0.0) ** 2)
    parts = seed_parts + ([(se_images ** 2, labels.size - 1)] if se_images is not None else [])
    df = _satterthwaite(parts)
    se = math.sqrt(variance)
    if se_seeds is None and se_images is None:
        low = high = None
    else:
        half_width = float(stats.t.ppf((1 + CONFIDENCE) / 2, df)) * se if se > 0 else 0.0
        low, high = estimate - half_width, estimate + half_width
    return DifferenceCI(estimate, low, high, se, se_seeds, se_images, df,
                        _satterthwaite(seed_parts) if known else None, _method(se_images is not None, tuple(sizes)))


def accuracy_difference_ci(variant_values, baseline_values, variant_predictions=None, baseline_predictions=None,
                           labels=None, balanced: bool = False, seed: int = 0,
                           resamples: int = BOOTSTRAP_RESAMPLES) -> DifferenceCI:
    """Mean accuracy difference with a two-level (seeds, then shared test galaxies) bootstrap t interval.

    The standard error is that of the two-level bootstrap (see _two_level), less the run-by-image
    interaction it counts twice (estimated by the two-way ANOVA residual of each arm's runs x images
    correctness); the t quantile has Welch-Satterthwaite degrees of freedom over three parts: each arm's
    seed variance s^2/n (n - 1 df) and the test-galaxy part (images - 1 df). With predictions
    (runs x images) and labels, the runs' metric is recomputed from them.
    """
    correct_v, values_v = _correct_and_values(variant_values, variant_predictions, labels, balanced)
    correct_b, values_b = _correct_and_values(baseline_values, baseline_predictions, labels, balanced)
    if values_v.size == 0 or values_b.size == 0:
        raise ValueError("an accuracy difference needs at least one run in each arm")
    return _bootstrap_interval([(values_v, correct_v), (values_b, correct_b)], [1, -1], labels, balanced, seed,
                               resamples)


def accuracy_summary(metric: str, values, predictions=None, labels=None, seed: int = 0,
                     resamples: int = BOOTSTRAP_RESAMPLES) -> AccuracySummary:
    """One arm's mean accuracy with the same two-level bootstrap t interval as accuracy_difference_ci."""
    balanced = metric == "test_balanced_accuracy"
    correct, values = _correct_and_values(values, predictions, labels, balanced)
    interval = _bootstrap_interval([(values, correct)], [1], labels, balanced, seed, resamples)
    return AccuracySummary(metric, int(values.size), interval.difference, interquartile_mean(values),
                           float(values.std(ddof=1)) if values.size > 1 else 0.0,
                           None if interval.low is None else (interval.low, interval.high), interval.method,
                           tuple(values.tolist()))


# --- what a null result means -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests (TOST) that the accuracy difference lies within +-margin."""

    margin: float
    p_value: float  # the larger of the two one-sided p-values
    equivalent: bool  # p_value < alpha: the (1 - 2 alpha) CI lies inside (-margin, margin)
    ci: tuple[float, float]  # the (1 - 2 alpha) interval of the difference


def minimum_detectable_effect(se: float, df: float, alpha: float, power: float = POWER) -> float:
    """Smallest true difference a two-sided level-alpha test detects with `power`: (t_{1-a/2} + t_power) * se."""
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


@lru_cache(maxsize=32)
def permutation_mde_factor(n_a: int, n_b: int, alpha: float, power: float = POWER) -> float | None:
    """MDE of the exact permutation test of the mean difference, in standard errors (None: too large a design).

    The t formula overstates this test's power where alpha is near the smallest p the design can reach
    (simulated at the t formula's MDE: 4 vs 4 at 0.05, power 0.63; 5 vs 5 at 0.05 / 6, 0.69; 6 vs 6 at
    0.05 / 12, 0.56). So exact designs up to MDE_SIMULATION_LIMIT relabellings get their own: normal runs of
    equal variance, arm A shifted by d standard errors; the power at d is the share of MDE_EXPERIMENTS
    simulated experiments (the same ones for every d) whose exact p is below alpha; bisection on d.
    """
    n_total = n_a + n_b
    if math.comb(n_total, n_a) > MDE_SIMULATION_LIMIT:
        return None
    membership = _all_memberships(n_total, n_a).astype(float)  # row 0 is the observed labelling
    in_a = np.arange(n_total) < n_a
    noise = np.random.default_rng(0).standard_normal((MDE_EXPERIMENTS, n_total)) / math.sqrt(1 / n_a + 1 / n_b)

    def power_at(shift: float) -> float:
        runs = noise + shift * in_a
        sums = runs @ membership.T
        values = np.abs(sums / n_a - (runs.sum(1, keepdims=True) - sums) / n_b)
        tolerance = 1e-9 * values.max(1, keepdims=True)
        p_values = np.count_nonzero(values >= values[:, :1] - tolerance, axis=1) / values.shape[1]
        return float(np.mean(p_values < alpha))

    low, high = 0.0, minimum_detectable_effect(1.0, n_total - 2, alpha, power)
    for _ in range(30):
        if power_at(high) >= power:
            break
        low, high = high, 1.5 * high
    else:
        return None  # alpha below the design's floor: no shift is detected often enough
    for _ in range(12):
        middle = (low + high) / 2
        low, high = (low, middle) if power_at(middle) >= power else (middle, high)
    return high


def tost(difference: float, se: float, df: float, margin: float, alpha: float) -> Equivalence:
    """Two one-sided t tests of |difference| < margin (statsmodels' ttost_ind given the same se and df)."""
    if se == 0:
        p_value = 0.0 if abs(difference) < margin else 1.0
        return Equivalence(margin, p_value, p_value < alpha, (difference, difference))
    p_lower = float(stats.t.sf((difference + margin) / se, df))  # H0: difference <= -margin
    p_upper = float(stats.t.cdf((difference - margin) / se, df))  # H0: difference >= +margin
    half_width = float(stats.t.ppf(1 - alpha, df)) * se
    p_value = max(p_lower, p_upper)
    return Equivalence(margin, p_value, p_value < alpha, (difference - half_width, difference + half_width))


# --- label efficiency and costs -----------------------------------------------------------------------------

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


def _labels_needed(sizes, baseline_accuracy, target) -> tuple[np.ndarray, np.ndarray]:
    """Rows of baseline curves (B, sizes) and targets (B,) -> what the labels needed can be, [low, high].

    The baseline's mean accuracy is interpolated linearly in log size; the answer is its FIRST crossing
    of the target (the fewest labels at which the curve reaches it), so a later dip does not matter and a
    non-monotone curve is not smoothed. At or below the smallest size: [0, smallest]; never: [largest, inf].
    """
    sizes = np.asarray(sizes, float)
    log_sizes = np.log(sizes)
    curve, target = np.atleast_2d(baseline_accuracy), np.atleast_1d(np.asarray(target, float))
    reaches = curve >= target[:, None]
    first = reaches.argmax(1)
    rows = np.arange(curve.shape[0])
    previous = np.maximum(first - 1, 0)
    step = curve[rows, first] - curve[rows, previous]
    fraction = np.divide(target - curve[rows, previous], step, out=np.ones_like(target), where=step > 0)
    crossing = np.where(fraction >= 1, sizes[first],  # exactly at a measured size: no rounding through exp(log)
                        np.exp(log_sizes[previous] + fraction * (log_sizes[first] - log_sizes[previous])))
    smallest, largest = float(sizes[0]), float(sizes[-1])
    at_start, never = reaches[:, 0], ~reaches.any(1)
    low = np.where(at_start, 0.0, np.where(never, largest, crossing))
    high = np.where(at_start, smallest, np.where(never, np.inf, crossing))
    return low, high


def labels_saved(sizes, baseline_accuracy, arm_accuracy: float) -> Bound:
    """Labels the baseline needs to reach `arm_accuracy`, interpolated linearly in log size (first crossing)."""
    sizes = np.asarray(sizes, float)
    if sizes.size < 2 or np.any(np.diff(sizes) <= 0):
        raise ValueError("labels saved needs at least two increasing training-set sizes")
    low, high = _labels_needed(sizes, np.asarray(baseline_accuracy, float), arm_accuracy)
    if high[0] == sizes[0] and low[0] == 0:
        return Bound(float(sizes[0]), "at_most", "matched at the smallest size")
    if np.isinf(high[0]):
        return Bound(float(sizes[-1]), "at_least", "more than all: the baseline never gets there")
    return Bound(float(low[0]))


@dataclass(frozen=True)
class BreakEven:
    """After how many fine-tunes pretraining pays for itself (None and never=True: it never does)."""

    fine_tunes: int | None  # smallest k >= 1 with pretraining + k * fine_tune <= k * baseline
    exact: float | None  # pretraining / (baseline - fine_tune)
    never: bool


def break_even(pretraining_cost: float, fine_tune_cost: float, baseline_cost: float) -> BreakEven:
    """Fine-tunes after which pretraining once plus k cheaper fine-tunes costs no more than k baseline trainings."""
    saving = baseline_cost - fine_tune_cost
    if saving <= 0:
        return BreakEven(None, None, True)
    exact = pretraining_cost / saving
    fine_tunes = max(1, math.ceil(exact))
    # float division can land just above an integer that already pays off
    if fine_tunes > 1 and pretraining_cost + (fine_tunes - 1) * fine_tune_cost <= (fine_tunes - 1) * baseline_cost:
        fine_tunes -= 1
    return BreakEven(fine_tunes, exact, False)


@dataclass(frozen=True)
class CostSummary:
    """One arm's cost (to the primary threshold, or of a full training) with a CI and break-even."""

    variant: str
    train_size: int | None
    metric: str  # "train_flops" or "device_seconds"
    scope: str  # "to 0.8" (KM median of the cost to the threshold) or "full training" (mean of totals)
    estimate: Bound
    ci: tuple[Bound, Bound]
    ci_method: str
    pretraining: float | None  # mean full pretraining cost over the arm's distinct pretrainings; None: none
    break_even: BreakEven | None  # against the baseline at the same size; None for the baseline / no pretraining


def _cost_summary(metric: str, rows: list[dict], threshold: float | None, rng) -> CostSummary | None:
    """An arm's cost: KM median of the cost to the threshold (bootstrap CI) or the mean of totals (t CI)."""
    if threshold is None:
        values = np.asarray([(r.get("totals") or {}).get(metric) for r in rows], dtype=object)
        if any(v is None for v in values):
            return None
        values = values.astype(float)
        mean = float(values.mean())
        if values.size > 1:
            half_width = float(stats.t.ppf((1 + CONFIDENCE) / 2, values.size - 1) * values.std(ddof=1)
                               / math.sqrt(values.size))
            ci = (Bound(mean - half_width), Bound(mean + half_width))
        else:
            ci = (Bound(None, "unknown", "one run"),) * 2
        return CostSummary(rows[0]["variant"], rows[0].get("train_size"), metric, "full training", Bound(mean),
                           ci, "mean of the runs' totals, t interval", None, None)
    crossings = [r["thresholds"][str(threshold)] for r in rows]
    if any(c.get(metric) is None for c in crossings):
        return None
    times = np.asarray([c[metric] for c in crossings], float)
    reached = np.asarray([c["reached"] for c in crossings], bool)
    km = kaplan_meier(times, reached)
    if times.size > 1:
        index = rng.integers(0, times.size, (BOOTSTRAP_RESAMPLES, times.size))
        median, found = _km_medians(times[index], reached[index])
        ci = _interval_from_ends(median, np.where(found, median, np.inf), "median not reached in some resamples")
    else:
        ci = (Bound(None, "unknown", "one run"),) * 2
    return CostSummary(rows[0]["variant"], rows[0].get("train_size"), metric, f"to {threshold:g}", km.median, ci,
                       "Kaplan-Meier median, percentile bootstrap of runs", None, None)


def _pretraining_cost(metric: str, rows: list[dict]) -> float | None:
    """Mean full pretraining cost over the distinct pretrainings an arm's runs started from (None: none)."""
    costs = {}
    for index, row in enumerate(rows):
        cost = row.get("pretrain_cost") or {}
        if cost.get(metric) is not None:
            costs[row.get("pretrain_id") or index] = float(cost[metric])
    return float(np.mean(list(costs.values()))) if costs else None


# --- comparisons and the analysis ---------------------------------------------------------------------------

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
    test: HypothesisTest | None  # None where nothing can be tested (no event in either arm)
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


def _test_labels(runs: list[dict]) -> np.ndarray | None:
    """The test labels, where every run has the same ones on the same images (else None: seeds only)."""
    labels = [r.get("test_labels") for r in runs]
    if any(x is None for x in labels) or any(x != labels[0] for x in labels):
        return None
    images = [r.get("test_rows") for r in runs]
    if any(x != images[0] for x in images):
        return None
    return np.asarray(labels[0])


def _accuracy_inputs(rows: list[dict], metric: str, labels) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A cell's values of an accuracy metric and, where usable, its runs' predictions (None: not recorded)."""
    values = [r.get(metric) for r in rows]
    if any(v is None for v in values):
        return None
    predictions = [r.get("test_predictions") for r in rows]
    usable = metric != "best_val_accuracy" and labels is not None and \
        all(p is not None and len(p) == labels.size for p in predictions)
    return np.asarray(values, float), (np.asarray(predictions) if usable else None)


def _time_inputs(rows: list[dict], endpoint: Endpoint) -> tuple[np.ndarray, np.ndarray] | None:
    """A cell's costs to the endpoint's threshold and whether each run reached it (None: not recorded)."""
    crossings = [(r.get("thresholds") or {}).get(str(endpoint.threshold)) for r in rows]
    if any(c is None or c.get(endpoint.field) is None for c in crossings):
        return None
    return (np.asarray([c[endpoint.field] for c in crossings], float),
            np.asarray([c["reached"] for c in crossings], bool))


def _welch_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Welch's two-sided p (information only), with at least MIN_SEEDS runs per arm."""
    if min(a.size, b.size) < MIN_SEEDS:
        return None
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return None  # two constant arms that differ: Welch's t is infinite, its p meaningless
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nearly constant arms: information only
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _compare_accuracy(endpoint: Endpoint, variant: str, baseline: str, size, rows_v, rows_b, labels,
                      seed: int) -> Comparison | None:
    """An accuracy endpoint: difference of means, two-level CI, permutation test (McNemar for 1 vs 1)."""
    inputs_v, inputs_b = (_accuracy_inputs(rows, endpoint.field, labels) for rows in (rows_v, rows_b))
    if inputs_v is None or inputs_b is None:
        return None
    (values_v, predictions_v), (values_b, predictions_b) = inputs_v, inputs_b
    if predictions_v is None or predictions_b is None:
        predictions_v = predictions_b = None
    balanced = endpoint.field == "test_balanced_accuracy"
    ci = accuracy_difference_ci(values_v, values_b, predictions_v, predictions_b,
                                labels if predictions_v is not None else None, balanced, seed)
    if values_v.size == values_b.size == 1 and predictions_v is not None and not balanced:
        test = mcnemar_exact(predictions_v[0] == labels, predictions_b[0] == labels)
    else:
        test = permutation_mean_difference(values_v, values_b, seed)
    unknown = Bound(None, "unknown", "one run per arm and no per-image predictions")
    return Comparison(
        variant, baseline, endpoint, size, False, int(values_v.size), int(values_b.size), Bound(ci.difference),
        (unknown, unknown) if ci.low is None else (Bound(ci.low), Bound(ci.high)), ci.method, test,
        difference_ci=ci, welch_p=_welch_p(values_v, values_b), hedges_g=_finite_hedges_g(values_v, values_b))


def _finite_hedges_g(a: np.ndarray, b: np.ndarray) -> float | None:
    """Hedges' g with at least MIN_SEEDS runs per arm; None where it is infinite (constant arms that differ)."""
    if min(a.size, b.size) < MIN_SEEDS:
        return None
    g = hedges_g(a, b)
    return g if math.isfinite(g) else None


def _compare_time(endpoint: Endpoint, variant: str, baseline: str, size, rows_v, rows_b,
                  seed: int) -> Comparison | None:
    """A time-to-threshold endpoint: ratio of KM medians with its bootstrap CI, permutation log-rank test."""
    inputs_v, inputs_b = _time_inputs(rows_v, endpoint), _time_inputs(rows_b, endpoint)
    if inputs_v is None or inputs_b is None:
        return None
    estimate, ci = km_median_ratio(*inputs_v, *inputs_b, seed=seed)
    return Comparison(
        variant, baseline, endpoint, size, False, len(rows_v), len(rows_b), estimate, ci,
        "ratio of Kaplan-Meier medians, percentile bootstrap of runs within each arm",
        permutation_logrank(*inputs_v, *inputs_b, seed=seed),
        mde_note="not computed for time-to-threshold endpoints: see the interval of the median ratio",
        km=kaplan_meier(*inputs_v), baseline_km=kaplan_meier(*inputs_b),
        probability_of_improvement=probability_of_improvement(*inputs_v, *inputs_b))


def _design_floor(n_a: int, n_b: int) -> float:
    """Smallest two-sided p of a two-sample permutation test with these arm sizes and no ties in the data."""
    count = math.comb(n_a + n_b, n_a)
    if count > EXACT_LIMIT:
        return 1 / (MONTE_CARLO_RESAMPLES + 1)
    return (2 if n_a == n_b else 1) / count  # equal arms: a labelling and its mirror are equally extreme


def _judge(comparison: Comparison, alpha: float, family_size: int, margin: float | None) -> None:
    """Detected or not, the minimum detectable effect and the equivalence test of one comparison."""
    p = comparison.p_adjusted if comparison.confirmatory else (comparison.test and comparison.test.p_value)
    comparison.detected = p is not None and p < alpha
    ci = comparison.difference_ci
    if ci is None:
        return
    # Holm's first step tests at alpha / m: an effect of this size is found whatever the other p-values
    level = alpha / family_size if comparison.confirmatory else alpha
    floor = _design_floor(comparison.n, comparison.baseline_n)
    if comparison.test.name == "McNemar exact":
        comparison.mde_note = "one run per arm: McNemar's test compares these two runs only; no MDE over seeds"
    elif not floor < level:
        comparison.mde_note = (f"with {comparison.n} and {comparison.baseline_n} runs the smallest reachable p is "
                               f"{floor:.3g}, not below {level:.3g}: no difference of any size can be detected")
    elif not ci.se_seeds:
        comparison.mde_note = "no seed-to-seed variation observed: the MDE is not estimable"
    elif (factor := permutation_mde_factor(comparison.n, comparison.baseline_n, level)) is not None:
        comparison.mde = factor * ci.se_seeds
        comparison.mde_note = (f"{factor:.2f} x SE over seeds: where the exact permutation test has {POWER:.0%} "
                               f"power at a = {level:.3g} (simulated), SE = {ci.se_seeds:.3g}")
    else:
        comparison.mde = minimum_detectable_effect(ci.se_seeds, ci.df_seeds, level)
        comparison.mde_note = (f"(t(1 - a/2) + t({POWER:g})) x SE over seeds, a = {level:.3g}, "
                               f"SE = {ci.se_seeds:.3g}, Welch df = {ci.df_seeds:.1f}")
    if margin is not None and ci.low is not None:
        comparison.equivalence = tost(ci.difference, ci.se, ci.df, margin, alpha)


def analyse(runs: list[dict], thresholds: list[float], baseline: str, settings: dict | None = None,
            seed: int = 0) -> Analysis:
    """Compare every arm with the baseline: the confirmatory family (Holm), exploratory rest, labels, costs."""
    config = Settings.from_section(settings, thresholds)
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    if baseline not in variants:
        raise ValueError(f"baseline {baseline!r} has no runs")
    sizes = sorted({r.get("train_size") for r in runs}, key=lambda s: (s is None, s or 0))
    cells = {(v, s): [r for r in runs if r["variant"] == v and r.get("train_size") == s]
             for v in variants for s in sizes}
    cells = {key: rows for key, rows in cells.items() if rows}
    labels = _test_labels(runs)
    analysis = Analysis(baseline, variants, list(thresholds), sizes, config)
    if not config.declared:
        analysis.notes.append("No primary endpoint was declared ([analysis] primary): the default, test_accuracy, "
                              "was used.")
    if labels is None and any(r.get("test_predictions") is not None for r in runs):
        analysis.notes.append("Test labels are missing or differ between runs: accuracy intervals resample seeds "
                              "only, not test galaxies.")
    shared = sum(bool(r.get("shared_gpu")) for r in runs)
    if shared:
        analysis.notes.append(f"{shared} of {len(runs)} runs shared their GPU with other work: their "
                              f"device-seconds overstate the cost of a run alone.")
    for variant in variants:
        ids = {r.get("pretrain_id") or r.get("replicate") for r in runs if r["variant"] == variant} - {None}
        if len(ids) > 1:
            analysis.notes.append(f"{variant}: runs start from {len(ids)} pretrainings; runs are "
                                  f"treated as independent, so differences between pretrainings count as seed "
                                  f"variation.")
    endpoints = [Endpoint(m, "accuracy", m) for m in ACCURACY_ENDPOINTS] + \
        [Endpoint(f"{name}_to:{t:g}", "time", key, t) for t in thresholds for name, key in COST_ENDPOINTS.items()]

    for (variant, size), rows in cells.items():
        arm = ArmSummary(variant, size, len(rows))
        for metric in ACCURACY_ENDPOINTS:
            inputs = _accuracy_inputs(rows, metric, labels)
            if inputs is not None:
                arm.accuracy[metric] = accuracy_summary(metric, inputs[0], inputs[1],
                                                        labels if inputs[1] is not None else None, seed)
        for endpoint in endpoints[len(ACCURACY_ENDPOINTS):]:
            inputs = _time_inputs(rows, endpoint)
            if inputs is not None:
                arm.km[endpoint.text] = kaplan_meier(*inputs)
        analysis.arms.append(arm)

    for (variant, size), rows in cells.items():
        if variant == baseline or (baseline, size) not in cells:
            continue
        for endpoint in endpoints:
            compare = _compare_accuracy if endpoint.kind == "accuracy" else _compare_time
            args = (labels,) if endpoint.kind == "accuracy" else ()
            comparison = compare(endpoint, variant, baseline, size, rows, cells[(baseline, size)], *args, seed)
            if comparison is None:
                if endpoint == config.primary:
                    analysis.notes.append(f"{variant} (train_size {size}): the primary endpoint "
                                          f"{endpoint.text} is not recorded in every run; not compared.")
                continue
            comparison.confirmatory = endpoint == config.primary
            (analysis.confirmatory if comparison.confirmatory else analysis.exploratory).append(comparison)

    adjusted = holm([c.test.p_value if c.test else None for c in analysis.confirmatory])
    for comparison, p in zip(analysis.confirmatory, adjusted, strict=True):
        comparison.p_adjusted = None if np.isnan(p) else float(p)
    for comparison in analysis.confirmatory + analysis.exploratory:
        _judge(comparison, config.alpha, max(len(analysis.confirmatory), 1), config.equivalence)

    analysis.labels_saved = _all_labels_saved(cells, baseline, config, labels, seed)
    analysis.costs = _all_costs(cells, baseline, config, seed)
    analysis.main_threshold = _main_threshold(cells, baseline, sizes, thresholds)
    return analysis


def _all_labels_saved(cells, baseline: str, config: Settings, labels, seed: int) -> list[LabelsSaved]:
    """Labels saved for every arm and training-set size, where the baseline ran at two sizes or more."""
    metric = config.primary.field if config.primary.field in ("test_accuracy", "test_balanced_accuracy") \
        else "test_accuracy"
    base_sizes = sorted(s for (v, s) in cells if v == baseline and s is not None)
    base_inputs = [_accuracy_inputs(cells[(baseline, s)], metric, labels) for s in base_sizes]
    if len(base_sizes) < 2 or any(x is None for x in base_inputs):
        return []
    found = []
    for (variant, size), rows in cells.items():
        inputs = _accuracy_inputs(rows, metric, labels)
        if variant == baseline or size is None or inputs is None:
            continue
        involved = base_inputs + [inputs]
        with_images = all(p is not None for _, p in involved)
        cell_data = [_correct_and_values(v, p, labels if with_images else None, metric != "test_accuracy")
                     for v, p in involved]
        means = np.asarray([values.mean() for _, values in cell_data])
        replicates, _ = _two_level([(values, correct) for correct, values in cell_data],
                                   labels if with_images else None, metric != "test_accuracy", seed,
                                   BOOTSTRAP_RESAMPLES)
        low, high = _labels_needed(base_sizes, replicates[:, :-1], replicates[:, -1])
        method = "percentile bootstrap: seeds within each (arm, size) cell" + \
            (", then the same test galaxies for every cell" if with_images else " only (no per-image predictions)")
        found.append(LabelsSaved(variant, size, metric, float(means[-1]),
                                 labels_saved(base_sizes, means[:-1], float(means[-1])),
                                 _interval_from_ends(low, high, "open in some resamples"), method,
                                 bool(np.all(np.diff(means[:-1]) >= 0))))
    return found


def _all_costs(cells, baseline: str, config: Settings, seed: int) -> list[CostSummary]:
    """Each arm's fine-tuning cost per metric, its pretraining cost and the break-even against the baseline."""
    rng = np.random.default_rng(seed)
    threshold = config.primary.threshold
    summaries = {}
    for key, rows in cells.items():
        for metric in COST_SUMMARY_METRICS:
            summary = _cost_summary(metric, rows, threshold, rng)
            if summary is not None:
                summaries[key + (metric,)] = summary
    found = []
    for (variant, size, metric), summary in summaries.items():
        pretraining = _pretraining_cost(metric, cells[(variant, size)])
        base = summaries.get((baseline, size, metric))
        even = None
        if variant != baseline and pretraining is not None and base is not None \
                and not summary.estimate.is_open and not base.estimate.is_open:
            even = break_even(pretraining, summary.estimate.value, base.estimate.value)
        found.append(CostSummary(variant, size, metric, summary.scope, summary.estimate, summary.ci,
                                 summary.ci_method, pretraining, even))
    return found


def _main_threshold(cells, baseline: str, sizes, thresholds) -> float | None:
    """DESCRIPTIVE: the highest threshold the baseline (largest size) reached in at least half its runs."""
    rows = cells.get((baseline, sizes[-1])) or []
    for threshold in sorted(thresholds, reverse=True):
        inputs = _time_inputs(rows, Endpoint(f"epochs_to:{threshold:g}", "time", "epochs", threshold))
        if inputs is not None and not kaplan_meier(*inputs).median.is_open:
            return threshold
    return None


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
