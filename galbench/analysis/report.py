"""Reports: a run directory's results and statistics, for the terminal, Markdown, HTML and JSON.

`load_report` reads the run directory (counting every run, finished or not); `stats.analyse` computes every
estimate, interval and p-value. This module turns them into sentences and rows of text (`Section`,
`Table`) that all renderers share: rich tables for the terminal (fewer columns), Markdown, an HTML page from
a jinja2 template (every column), and report.json (the numbers). It computes no statistic itself.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import numpy as np
from rich import box
from rich.table import Table as RichTable

from galbench.analysis import stats
from galbench.data.catalog import Catalog
from galbench.errors import GalbenchError


def catalog_info_table(catalog: Catalog) -> RichTable:
    """A `fitsinfo`-like summary of a catalog file: rows, columns, classes, images."""
    table = RichTable(title=str(catalog.path or "catalog"), show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("rows", f"{len(catalog):,}")
    table.add_row("columns", ", ".join(catalog.table.colnames))
    counts = catalog.class_counts()
    total = max(len(catalog), 1)
    for index, name in enumerate(catalog.classes):
        table.add_row(f"class {index}" if index else "classes", f"{name}: {counts.get(name, 0):,} "
                      f"({100 * counts.get(name, 0) / total:.1f}%)")
    if "unknown" in counts:
        table.add_row("", f"unknown (label -1): {counts['unknown']:,}")
    if catalog.images is not None:
        n, bands, height, width = catalog.images.shape
        size_mb = catalog.images.nbytes / 1e6
        table.add_row("IMAGES", f"{n:,} x {bands} x {height} x {width} uint8 ({size_mb:,.1f} MB)")
        table.add_row("bands", catalog.bands)
        table.add_row("pixel scale", f"{catalog.pixscale:.3f} arcsec/pixel" if catalog.pixscale else "not given")
        table.add_row("source", catalog.source or "not given")
        table.add_row("FITS stretch", catalog.stretch)
    else:
        table.add_row("IMAGES", "none (catalog only)")
    for column in ("ra", "dec"):
        if column in catalog.table.colnames:
            values = np.asarray(catalog.table[column], dtype=float)
            table.add_row(column, f"{values.min():.4f} .. {values.max():.4f} deg")
    return table


# --- reading a run directory ----------------------------------------------------------------------------

IMAGENET_NOTE = ("ImageNet pretraining is outside galbench's view, so its cost is not on this bill; for scale, "
                 "torchvision's AlexNet recipe trains 90 epochs of ImageNet-1k (about 115 million images seen).")


@dataclass(frozen=True)
class RunRecord:
    """One run directory under runs/ and the state of its event log."""

    name: str
    status: str  # "finished", "unfinished" or "unreadable"
    detail: str = ""  # why, in words: "event log cut mid-line at line 9", "last evaluation at epoch 2.5"


@dataclass
class SuiteReport:
    """What one run directory says, with its statistics: the input of every renderer."""

    path: Path
    suite: dict  # suite.resolved.json
    environment: dict
    records: list[RunRecord]
    runs: list[dict]  # results rows of the finished runs, in suite order
    classes: list[str]
    split: dict  # split.json ({} where absent)
    exports: dict  # export/exports.json ({} where absent)
    analysis: stats.Analysis

    @property
    def name(self) -> str:
        """The suite's name."""
        return self.suite["suite"]["name"]

    @property
    def baseline(self) -> str:
        """The arm every other arm is compared with."""
        return self.analysis.baseline

    @property
    def thresholds(self) -> list[float]:
        """The suite's validation thresholds."""
        return self.suite["suite"]["thresholds"]

    @property
    def threshold_metric(self) -> str:
        """Which validation metric the thresholds are on, in words."""
        metric = self.suite["suite"].get("threshold_metric") or "accuracy"
        return "validation balanced accuracy" if metric == "balanced_accuracy" else "validation accuracy"

    @property
    def multi_size(self) -> bool:
        """Whether the suite trained at several training-set sizes (only then are sizes named)."""
        return len(self.analysis.train_sizes) > 1

    @property
    def planned_runs(self) -> int:
        """Runs the suite asks for: arms x seeds x training-set sizes."""
        sizes = self.suite["suite"].get("train_sizes") or [None]
        return len(self.suite["variant"]) * len(self.suite["suite"]["seeds"]) * len(sizes)


def _read_json(path: Path, required: bool = False) -> dict:
    if not path.exists():
        if required:
            raise GalbenchError(f"not a galbench run directory (no {path.name})", where=str(path.parent))
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GalbenchError(f"unreadable JSON: {exc}", where=str(path),
                            fix="restore the file, or run the suite again into a fresh directory") from None


def read_run(folder: Path, thresholds: list[float]) -> tuple[RunRecord, dict | None]:
    """One run directory: its record and, where its event log has a run_start, its results row."""
    from galbench.experiment.train import EventLog, results_from_events

    log = folder / "events.jsonl"
    if not log.exists():
        return RunRecord(folder.name, "unreadable", "no event log"), None
    try:
        lines = log.read_text().splitlines()
        events = EventLog(log).read()
    except UnicodeDecodeError:
        return RunRecord(folder.name, "unreadable", "event log is not UTF-8 text"), None
    except OSError as exc:
        return RunRecord(folder.name, "unreadable", f"event log unreadable: {exc.strerror}"), None
    cut = ""
    if len(events) == len(lines) - 1:
        cut = f"event log cut mid-line at its last line ({len(lines)})"
    elif len(events) < len(lines):
        cut = f"event log damaged at line {len(events) + 1} of {len(lines)}, read up to there"
    if not any(isinstance(e, dict) and e.get("event") == "run_start" for e in events):
        return RunRecord(folder.name, "unreadable", cut or "no run_start event"), None
    try:
        row = results_from_events(events, thresholds)
    except (KeyError, TypeError, ValueError, AttributeError):
        return RunRecord(folder.name, "unreadable", "malformed events (fields missing or of the wrong type)"), None
    if row["finished"]:
        return RunRecord(folder.name, "finished", cut), row
    epochs = (row["totals"] or {}).get("epochs")
    where = f"last evaluation at epoch {epochs:g}" if epochs else "no evaluation yet"
    return RunRecord(folder.name, "unfinished", "; ".join(filter(None, [where, cut]))), row


def load_report(run_dir: str | Path) -> SuiteReport:
    """Recompute a suite's results and statistics from a run directory's files (no retraining)."""
    run_dir = Path(run_dir)
    suite = _read_json(run_dir / "suite.resolved.json", required=True)
    records, runs = [], []
    for folder in sorted(p for p in (run_dir / "runs").glob("*") if p.is_dir()):
        record, row = read_run(folder, suite["suite"]["thresholds"])
        records.append(record)
        if record.status == "finished":
            row["retries"] = _read_json(folder / "retries.json").get("retries", 0)
            runs.append(row)
    _add_runner_fields(runs, _read_json(run_dir / "results.json").get("runs", []))
    split = _read_json(run_dir / "split.json")
    return build_report(run_dir, suite, runs, records, _read_json(run_dir / "environment.json"), split,
                        _read_json(run_dir / "export" / "exports.json"))


def _add_runner_fields(runs: list[dict], stored: list[dict]) -> None:
    """Fields the runner adds to results.json but not to the event log (the pretraining's cost in 0.2.0).

    Everything the event log says wins; results.json only fills in what the log leaves empty. Rows written
    without a training-set size match on arm and seed alone.
    """
    by_run = {}
    for r in stored:
        if isinstance(r, dict):
            by_run[(r.get("variant"), r.get("seed")) + ((r["train_size"],) if "train_size" in r else ())] = r
    for row in runs:
        extra = by_run.get((row["variant"], row["seed"], row.get("train_size"))) or \
            by_run.get((row["variant"], row["seed"]), {})
        row.update({key: value for key, value in extra.items() if row.get(key) is None})


def build_report(path: Path, suite: dict, runs: list[dict], records: list[RunRecord] | None = None,
                 environment: dict | None = None, split: dict | None = None,
                 exports: dict | None = None) -> SuiteReport:
    """A report from a resolved suite and finished runs' results rows: orders the runs and analyses them."""
    records = records if records is not None else [RunRecord(f"{r['variant']}__seed{r['seed']}", "finished")
                                                   for r in runs]
    if not runs:
        counts = ", ".join(f"{n} {s}" for s, n in _status_counts(records).items() if n) or "none found"
        raise GalbenchError(f"no finished runs to report ({counts})", where=str(path),
                            fix="run the suite (the same command resumes unfinished runs)")
    order = [v["name"] for v in suite["variant"]]
    runs = sorted(runs, key=lambda r: (order.index(r["variant"]) if r["variant"] in order else len(order),
                                       r.get("train_size") or math.inf, r["seed"]))
    baseline = suite.get("baseline") or order[0]
    if not any(r["variant"] == baseline for r in runs):
        raise GalbenchError(f"the baseline arm {baseline} has no finished run", where=str(path),
                            fix="finish its runs (run the suite again) before comparing against it")
    try:
        analysis = stats.analyse(runs, suite["suite"]["thresholds"], baseline, _statistics_settings(suite))
    except ValueError as exc:
        raise GalbenchError(f"cannot analyse: {exc}", where=str(Path(path) / "suite.resolved.json"),
                            fix="correct the suite's [analysis] table and run the suite again") from None
    split = split or {}
    return SuiteReport(Path(path), suite, environment or {}, records, runs, split.get("classes", []), split,
                       exports or {}, analysis)


def _statistics_settings(suite: dict) -> dict | None:
    """The suite's [analysis] keys that the statistics take (others, like allow_unequal_budgets, are the
    suite's own checks, already applied when the suite was validated)."""
    known = {f.name for f in fields(stats.Settings)}
    # the resolved suite writes every key; None is a key the suite left out (a primary None was not declared)
    section = {k: v for k, v in (suite.get("analysis") or {}).items() if k in known and v is not None}
    return section or None


def _status_counts(records: list[RunRecord]) -> dict[str, int]:
    return {status: sum(r.status == status for r in records) for status in ("finished", "unfinished", "unreadable")}


def run_status(report: SuiteReport) -> tuple[str, bool]:
    """One sentence on how many runs were found in each state, and whether anything is missing."""
    counts = _status_counts(report.records)
    found = len(report.records)
    not_started = max(report.planned_runs - found, 0)
    text = f"{found} run{'s' if found != 1 else ''} found: {counts['finished']} finished"
    for status in ("unfinished", "unreadable"):
        if counts[status]:
            listed = "; ".join(f"{r.name} ({r.detail})" for r in report.records if r.status == status)
            text += f", {counts[status]} {status}: {listed}"
    if not_started:
        text += f"; {not_started} of the {report.planned_runs} planned runs not started"
    cut = [r for r in report.records if r.status == "finished" and r.detail]
    if cut:
        text += "; finished, with a damaged log: " + "; ".join(f"{r.name} ({r.detail})" for r in cut)
    incomplete = bool(counts["unfinished"] or counts["unreadable"] or not_started)
    if incomplete:
        text += ". Only finished runs enter the statistics; run the suite again to finish the others."
    return text + ("" if incomplete else "."), incomplete


# --- numbers as text --------------------------------------------------------------------------------------

def fmt_p(p: float | None) -> str:
    """A p-value with two significant figures (never rounded to zero)."""
    if p is None:
        return ""
    if p >= 0.1:
        return f"{p:.2f}"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def fmt_bound(bound: stats.Bound | None, fmt) -> str:
    """An exact value, a one-sided bound ("> 2.4", "< 0.5"), or what is unknown in words."""
    if bound is None:
        return ""
    if bound.side == "exact":
        return fmt(bound.value)
    if bound.side == "at_least":
        return f"> {fmt(bound.value)}"
    if bound.side == "at_most":
        return f"< {fmt(bound.value)}"
    return bound.note or "unknown"


def fmt_interval(ci: tuple[stats.Bound, stats.Bound] | None, fmt) -> str:
    """A 95% interval of Bounds: "[0.28, > 2.4]"; empty where both ends are unknown."""
    if ci is None or all(b.side == "unknown" for b in ci):
        return ""
    return "[" + ", ".join("unbounded" if b.side == "unknown" else fmt_bound(b, fmt) for b in ci) + "]"


def _acc(value: float) -> str:
    return f"{value:.3f}"


def _diff(value: float) -> str:
    return f"{value:+.3f}"


def _ratio(value: float) -> str:
    return f"{value:.3g}"


def _count(value: float) -> str:
    return f"{round(value):,}"


def _epochs(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class Unit:
    """A display unit for one table: values are divided by `scale` and labelled `label`."""

    scale: float
    label: str

    def __call__(self, value: float) -> str:
        scaled = value / self.scale
        return f"{scaled:,.0f}" if abs(scaled) >= 100 else f"{scaled:.3g}"  # three figures, never 3e+03


def flops_unit(values) -> Unit:
    """GFLOPs, TFLOPs, PFLOPs or EFLOPs: the largest unit in which the table's typical value is at least 1."""
    typical = _typical(values)
    for scale, label in ((1e18, "EFLOPs"), (1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs")):
        if typical >= scale:
            return Unit(scale, label)
    return Unit(1e6, "MFLOPs")


def seconds_unit(values) -> Unit:
    """Device-seconds, -minutes or -hours, by the table's typical value."""
    typical = _typical(values)
    if typical >= 2 * 3600:
        return Unit(3600, "device-hours")
    return Unit(60, "device-minutes") if typical >= 120 else Unit(1, "device-seconds")


def _typical(values) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v) and v > 0]
    return float(np.median(finite)) if finite else 1.0


def size_label(report: SuiteReport, size: int | None) -> str:
    """A training-set size in words: "1,000 labels", "all 2,727 labels"."""
    if size is None:
        return "all labels"
    labels = {r.get("train_size_label") for r in report.runs if r.get("train_size") == size}
    return f"all {size:,} labels" if "all" in labels else f"{size:,} labels"


def _where(report: SuiteReport, size) -> str:
    """ " at 1,000 labels" where the suite has several training-set sizes, else nothing."""
    return f" at {size_label(report, size)}" if report.multi_size else ""


# --- tables and sections: the rows every renderer shares -------------------------------------------------

@dataclass(frozen=True)
class Column:
    """A table column: the row key it shows and its heading."""

    key: str
    label: str
    terminal: bool = True  # shown in the terminal
    files: bool = True  # shown in report.md and report.html


@dataclass
class Table:
    """Rows of text under a title, rendered alike in the terminal, Markdown and HTML."""

    title: str
    columns: list[Column]
    rows: list[dict[str, str]]
    note: str = ""

    def shown(self, terminal: bool = False) -> list[Column]:
        """The columns with content that the terminal (or the report files) shows."""
        return [c for c in self.columns if (c.terminal if terminal else c.files) and any(row.get(c.key) for row in self.rows)]


@dataclass
class Figure:
    """An SVG figure with the words that describe it to a reader who cannot see it."""

    name: str  # file name stem
    svg: str
    alt: str  # what the figure shows, in words and numbers
    caption: str

    @property
    def data_uri(self) -> str:
        """The SVG as a data: URI, so the HTML page opens offline."""
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg.encode()).decode()


@dataclass
class Section:
    """One part of the report: facts, paragraphs, tables and figures under a heading."""

    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)


# --- lookups into the analysis ---------------------------------------------------------------------------

def _comparisons(report: SuiteReport) -> list[stats.Comparison]:
    return report.analysis.confirmatory + report.analysis.exploratory


def _find(report: SuiteReport, variant: str, size, field_: str, threshold: float | None = None):
    """The comparison of `variant` with the baseline on one endpoint at one size (None where absent)."""
    return next((c for c in _comparisons(report) if c.variant == variant and c.train_size == size
                 and c.endpoint.field == field_ and c.endpoint.threshold == threshold), None)


def _arm(report: SuiteReport, variant: str, size) -> stats.ArmSummary | None:
    return next((a for a in report.analysis.arms if a.variant == variant and a.train_size == size), None)


def _arm_km(arm: stats.ArmSummary | None, name: str, threshold: float) -> stats.KaplanMeier | None:
    """The arm's Kaplan-Meier estimate for "<name>_to:<threshold>" (keys are endpoint texts)."""
    for key, km in (arm.km if arm else {}).items():
        cost, _, value = key.partition("_to:")
        if cost == name and value and math.isclose(float(value), threshold):
            return km
    return None


def _sizes(report: SuiteReport) -> list:
    return list(report.analysis.train_sizes) or [None]


def _largest_size(report: SuiteReport):
    sizes = _sizes(report)
    return None if None in sizes else max(sizes)


def _variants(report: SuiteReport) -> list[str]:
    return list(report.analysis.variants)


ACCURACY_LABELS = {"test_accuracy": "test accuracy", "test_balanced_accuracy": "balanced test accuracy",
                   "best_val_accuracy": "best validation accuracy"}
COST_LABELS = {"epochs": "epochs", "samples": "samples", "train_flops": "training FLOPs",
               "device_seconds": "device-seconds", "energy_joules": "energy (J)"}
TEST_NAMES = {"permutation log-rank": "permutation log-rank", "permutation mean difference": "permutation",
              "McNemar exact": "McNemar exact"}


def endpoint_label(report: SuiteReport, endpoint: stats.Endpoint) -> str:
    """An endpoint in words: "test accuracy", "epochs to 0.8 validation accuracy"."""
    if endpoint.kind == "accuracy":
        return ACCURACY_LABELS.get(endpoint.field, endpoint.field.replace("_", " "))
    return f"{COST_LABELS.get(endpoint.field, endpoint.field)} to {endpoint.threshold:g} {report.threshold_metric}"


# --- sentences ---------------------------------------------------------------------------------------------

def _p_phrase(c: stats.Comparison) -> str:
    test = c.test
    text = f"{TEST_NAMES.get(test.name, test.name)} p = {fmt_p(test.p_value)}"
    if not test.exact and test.monte_carlo_se:
        text += f" (Monte-Carlo, ± {test.monte_carlo_se:.1g})"
    if c.confirmatory and c.p_adjusted is not None:
        text += f", Holm-adjusted {fmt_p(c.p_adjusted)}"
    return text


def _floor_phrase(c: stats.Comparison, level: float) -> str:
    return (f"with {c.n} against {c.baseline_n} runs no test of this design can reach p < {level:.3g} "
            f"(the smallest possible p is {fmt_p(c.test.p_floor)})")


def accuracy_verdict(report: SuiteReport, c: stats.Comparison) -> str:
    """An accuracy comparison as a person would say it, from the numbers."""
    label = endpoint_label(report, c.endpoint)
    where = _where(report, c.train_size)
    numbers = f"{fmt_bound(c.estimate, _diff)} {fmt_interval(c.ci, _diff)}".strip()
    if c.test is None:
        why = c.mde_note or "too few runs"
        return f"{c.variant} against {c.baseline} on {label}{where}: {numbers}; not tested ({why})."
    if c.detected:
        direction = "higher" if c.estimate.value > 0 else "lower"
        return (f"{c.variant} scored {direction} than {c.baseline} on {label}{where}: {numbers} "
                f"({_p_phrase(c)}).")
    text = f"{c.variant} against {c.baseline} on {label}{where}: no difference detected ({numbers}, {_p_phrase(c)})"
    if c.mde is not None:
        text += f"; a difference of ±{c.mde:.3f} or more would have been detected {stats.POWER:.0%} of the time"
    elif c.mde_note:
        text += f"; {c.mde_note}"
    if c.equivalence is not None:
        eq = c.equivalence
        text += (f"; equivalent within ±{eq.margin:g} (TOST p = {fmt_p(eq.p_value)})" if eq.equivalent else
                 f"; equivalence within ±{eq.margin:g} not shown (TOST p = {fmt_p(eq.p_value)})")
    return text + "."


def cost_format(field_: str, values) -> tuple:
    """How to print one cost in a sentence or table: a formatter and its unit, chosen for these values."""
    if field_ == "train_flops":
        unit = flops_unit(values)
        return unit, unit.label
    if field_ == "device_seconds":
        unit = seconds_unit(values)
        return unit, unit.label
    if field_ == "samples":
        return _count, "samples"
    return _epochs, COST_LABELS.get(field_, field_)


def _reach_phrase(km: stats.KaplanMeier, fmt, unit: str) -> str:
    median = "its median was not reached" if km.median.is_open else f"median {fmt_bound(km.median, fmt)} {unit}"
    return f"in {km.n_reached} of {km.n} runs ({median})"


def time_verdict(report: SuiteReport, c: stats.Comparison) -> str:
    """A time-to-threshold comparison as a person would say it, from the numbers."""
    threshold = c.endpoint.threshold
    fmt, unit = cost_format(c.endpoint.field, [km.median.value for km in (c.km, c.baseline_km)])
    text = f"{c.variant} reached {threshold:g}{_where(report, c.train_size)} "
    text += f"{_reach_phrase(c.km, fmt, unit)}, {c.baseline} {_reach_phrase(c.baseline_km, fmt, unit)}"
    if c.estimate.side == "unknown":
        text += f"; no ratio of medians ({c.estimate.note or 'not reached in either arm'})"
    else:
        text += f"; ratio of medians {fmt_bound(c.estimate, _ratio)} {fmt_interval(c.ci, _ratio)}".rstrip()
    if c.test is None:
        return text + "; nothing to test (no run of either arm reached it)."
    if c.detected:
        faster = (c.probability_of_improvement or 0) > 0.5
        return text + f": {c.variant} was {'faster' if faster else 'slower'} ({_p_phrase(c)})."
    text += f": no difference detected ({_p_phrase(c)})"
    # Holm's first step tests at alpha / m: below that no confirmatory comparison can be detected
    alpha = report.analysis.settings.alpha
    level = alpha / max(len(report.analysis.confirmatory), 1) if c.confirmatory else alpha
    if c.test.p_floor >= level:
        text += "; " + _floor_phrase(c, level)
    return text + "."


def verdict(report: SuiteReport, c: stats.Comparison) -> str:
    """One comparison in words."""
    return accuracy_verdict(report, c) if c.endpoint.kind == "accuracy" else time_verdict(report, c)


def primary_sentence(report: SuiteReport) -> str:
    """What the primary endpoint is, whether it was declared, alpha and the size of the Holm family."""
    settings = report.analysis.settings
    declared = "declared in the suite" if settings.declared else "the default: the suite declared none"
    family = len(report.analysis.confirmatory)
    return (f"Primary endpoint: {endpoint_label(report, settings.primary)} ({declared}), each arm against "
            f"{report.baseline}; alpha {settings.alpha:g}, Holm's adjustment over the {family} confirmatory "
            f"comparison{'s' if family != 1 else ''}. Everything else in this report is exploratory and "
            f"unadjusted.")


def cost_sentences(report: SuiteReport) -> list[str]:
    """Break-even in FLOPs for each pretrained arm, in words."""
    texts = []
    size = _largest_size(report)
    for cost in report.analysis.costs:
        if cost.metric != "train_flops" or cost.train_size != size or cost.break_even is None:
            continue
        unit = flops_unit([cost.pretraining, cost.estimate.value])
        base = next((b for b in report.analysis.costs if b.variant == report.baseline
                     and b.metric == cost.metric and b.train_size == size), None)
        per_run = (f"{fmt_bound(cost.estimate, unit)} {unit.label} per fine-tune ({cost.scope})"
                   + (f" against {fmt_bound(base.estimate, unit)} {unit.label} for {report.baseline}" if base else ""))
        pre = f"its pretraining ({unit(cost.pretraining)} {unit.label}, counted in full)"
        if cost.break_even.never:
            texts.append(f"{cost.variant} never pays back {pre}: {per_run}.")
        elif cost.break_even.fine_tunes == 1:
            texts.append(f"{cost.variant} pays back {pre} from the first fine-tune ({per_run}).")
        else:
            texts.append(f"{cost.variant} pays back {pre} after {cost.break_even.fine_tunes} fine-tunes ({per_run}).")
    return texts


def labels_sentences(report: SuiteReport) -> list[str]:
    """Labels saved at each arm's smallest training-set size, in one sentence per arm."""
    texts = []
    for variant in _variants(report):
        entries = sorted((e for e in report.analysis.labels_saved if e.variant == variant),
                         key=lambda e: e.train_size)
        if not entries:
            continue
        e, baseline = entries[0], report.baseline
        needed, metric = e.baseline_labels, ACCURACY_LABELS[e.metric]
        if needed.side == "at_least":
            texts.append(f"With {e.train_size:,} labels, {variant} scored higher on {metric} than {baseline} did "
                         f"with all {needed.value:,.0f}: {baseline} would need more labels than the suite gave it.")
        elif needed.side == "at_most":
            texts.append(f"With {e.train_size:,} labels, {variant} saved no labels: {baseline} matched its {metric} "
                         f"with at most {needed.value:,.0f}.")
        elif needed.side == "exact":
            texts.append(f"With {e.train_size:,} labels, {variant} matched {baseline}'s {metric} at "
                         f"{needed.value:,.0f} labels (95% CI {' to '.join(_labels_needed(b) for b in e.ci)}).")
    return texts


def headline(report: SuiteReport) -> list[str]:
    """The answer in a few sentences: the primary comparisons, labels saved, and whether pretraining pays."""
    size = _largest_size(report)
    primary = [c for c in report.analysis.confirmatory if c.train_size == size] or report.analysis.confirmatory
    texts = [verdict(report, c) for c in primary]
    if not texts:
        texts.append(f"Only {report.baseline} has finished runs, so there is nothing to compare it with yet.")
    return texts + labels_sentences(report) + cost_sentences(report)


# --- facts: dataset and design ---------------------------------------------------------------------------

def class_counts_in_test_split(report: SuiteReport) -> list[int] | None:
    """Galaxies per class in the test split, read from a finished run's confusion matrix (row sums)."""
    for row in report.runs:
        if row.get("confusion"):
            return [int(sum(r)) for r in row["confusion"]]
    return None


def chance_level(report: SuiteReport) -> tuple[float, str] | None:
    """The accuracy of always guessing the largest test class, and that class."""
    counts = class_counts_in_test_split(report)
    if not counts or not sum(counts):
        return None
    index = int(np.argmax(counts))
    name = report.classes[index] if index < len(report.classes) else f"class {index}"
    return counts[index] / sum(counts), name


def dataset_facts(report: SuiteReport) -> list[tuple[str, str]]:
    """Size, classes, chance level and split of the dataset, as label-value pairs."""
    data = report.suite.get("data", {})
    split_cfg = data.get("split", {})
    # per-seed splits (split.json "seeds") have the same sizes at every seed: the first one's are shown
    split = next(iter(report.split["seeds"].values())) if report.split.get("seeds") else report.split
    sizes = {k: len(split[k]) for k in ("train", "val", "test") if isinstance(split.get(k), list)}
    if data.get("synth"):
        synth = data["synth"]
        source = f"simulated galaxies (galbench data synth, seed {synth.get('seed')})"
    else:
        source = f"catalog {Path(data.get('catalog') or report.suite.get('catalog_path', '?')).name}"
    facts = [("galaxies", f"{sum(sizes.values()):,} from {source}" if sizes else source)]
    counts = class_counts_in_test_split(report)
    if report.classes:
        listed = ", ".join(report.classes if counts is None else
                           [f"{name} ({count:,})" for name, count in zip(report.classes, counts, strict=False)])
        facts.append(("classes", f"{len(report.classes)}: {listed}" + (" in the test split" if counts else "")))
    chance = chance_level(report)
    if chance:
        facts.append(("chance level", f"{chance[0]:.3f}: always guessing {chance[1]}, the largest class of the "
                                      "test split"))
    if sizes:
        per_seed = " (each seed its own split)" if split_cfg.get("per_seed") else ""
        facts.append(("split", f"train {sizes.get('train', 0):,} / validation {sizes.get('val', 0):,} / test "
                               f"{sizes.get('test', 0):,}, stratified, split seed {split_cfg.get('seed', 0)}{per_seed}"))
    if report.multi_size:
        facts.append(("labelled training sizes", ", ".join(size_label(report, s) for s in _sizes(report))
                      + " (nested subsets of the training split)"))
    crop = data.get("crop", 1.0)
    facts.append(("image size", f"{data.get('image_size', '?')} px" + (f", from the central {crop:g} of each cutout's side"
                                                                        if crop != 1.0 else "")))
    return facts


def _variant_train(report: SuiteReport, variant: dict) -> dict:
    return {**report.suite.get("train", {}), **variant.get("train", {})}


def design_facts(report: SuiteReport) -> list[tuple[str, str]]:
    """Models, budget, seeds, what varies between arms and which sources of variance were covered."""
    variants = report.suite["variant"]
    trains = {v["name"]: _variant_train(report, v) for v in variants}
    models = sorted({v["model"] for v in variants})
    budgets = list(dict.fromkeys(_budget_text(report, name, train) for name, train in trains.items()))
    seeds = report.suite["suite"]["seeds"]
    facts = [("arms", "; ".join(f"{v['name']} (init {v['init']}" + (f", fine-tune {v['finetune']}"
                                if v.get("finetune", "all") != "all" else "") + ")" for v in variants)
              + f"; baseline {report.baseline}"),
             ("model", ", ".join(models)),
             ("training budget", "; ".join(budgets) + (" (every arm)" if len(budgets) == 1 else " (by arm)")),
             ("seeds", f"{len(seeds)} per arm ({', '.join(str(s) for s in seeds)})")]
    varies = []
    for key in ("model", "init", "finetune"):
        values = [v.get(key) for v in variants]
        if len(set(map(str, values))) > 1:
            varies.append(f"{key} ({_listing(values)})")
    for key in sorted({k for t in trains.values() for k in t}):
        values = [trains[v["name"]].get(key) for v in variants]
        if len(set(map(str, values))) > 1:
            varies.append(f"train.{key} ({_listing(values)})")
    facts.append(("what varies between arms", ", ".join(varies) or "nothing but the arm's name"))
    facts.append(("thresholds", ", ".join(f"{t:g}" for t in report.thresholds) + f" ({report.threshold_metric})"))
    facts.append(("sources of variance", variance_sources(report)))
    missing = missing_fields(report)
    if missing:
        facts.append(("not recorded", f"{missing} (an older galbench wrote this run directory, or it does not apply)"))
    return facts


def _listing(values) -> str:
    """Settings of each arm in order, "default" where an arm leaves one to the suite."""
    return " / ".join("default" if v is None else str(v) for v in values)


def _budget_text(report: SuiteReport, variant: str, train: dict) -> str:
    """An arm's training budget as the suite gave it (steps or epochs), else as its runs trained it."""
    if train.get("steps"):
        return f"{train['steps']:,} optimizer steps"
    if train.get("epochs"):
        return f"{train['epochs']} epochs"
    trained = sorted({r["totals"]["epochs"] for r in report.runs if r["variant"] == variant
                      and r["totals"].get("epochs") is not None})
    return " to ".join(f"{e:g}" for e in dict.fromkeys([trained[0], trained[-1]])) + " epochs" if trained else "unknown"


def variance_sources(report: SuiteReport) -> str:
    """Which sources of variance the design covered (Bouthillier et al. 2021): seeds, splits, pretrainings."""
    split = report.suite.get("data", {}).get("split", {})
    covered = ["seeds (initialisation and data order): covered"]
    covered.append("splits: covered, one split per seed" if split.get("per_seed")
                   else "splits: not covered (one split serves every seed)")
    pretrained = {p["name"]: p for p in report.suite.get("pretrained", [])}
    for variant in report.suite["variant"]:
        init = variant["init"]
        if init == "fractal":
            replicates = (variant.get("fractal") or {}).get("replicates") or 1
        elif init.startswith("pretrained:"):
            replicates = pretrained.get(init.split(":", 1)[1], {}).get("replicates") or 1
        elif init.startswith(("imagenet", "checkpoint")):
            covered.append(f"pretraining of {variant['name']}: not covered (one fixed set of weights)")
            continue
        else:
            continue
        covered.append(f"pretraining of {variant['name']}: " + (f"covered, {replicates} independent pretrainings"
                       if replicates > 1 else "not covered (one pretraining serves every seed)"))
    return "; ".join(covered)


def exported_run(report: SuiteReport, name: str) -> dict | None:
    """The run exported as `name` (an arm, or "winner"), as exports.json names it; without that file, the same
    choice made here: the highest best validation accuracy, ties to the first run in suite order."""
    entry = report.exports.get(name)
    if isinstance(entry, dict):
        for row in report.runs:
            if (row["variant"], row["seed"]) == (entry.get("variant"), entry.get("seed")) and \
                    entry.get("train_size_label") in (None, row.get("train_size_label")):
                return row
    candidates = [r for r in report.runs if _selection_score(r) is not None and name in ("winner", r["variant"])]
    return max(candidates, key=_selection_score) if candidates else None


def _selection_score(row: dict) -> float | None:
    """What chose a run's best checkpoint (the thresholds' validation metric; accuracy in older runs)."""
    return row.get("best_val_score", row.get("best_val_accuracy"))


def winner(report: SuiteReport) -> dict | None:
    """The overall winner, chosen on the thresholds' validation metric as the export is; its test accuracy is
    what is quoted."""
    return exported_run(report, "winner")


def _run_name(report: SuiteReport, row: dict) -> str:
    size = f", {size_label(report, row.get('train_size'))}" if report.multi_size else ""
    return f"{row['variant']} seed {row['seed']}{size}"


# --- tables ------------------------------------------------------------------------------------------------

def _interval_text(summary: stats.AccuracySummary | None) -> str:
    if summary is None:
        return ""
    if summary.ci is None:
        return f"{summary.mean:.3f} (one run)"
    return f"{summary.mean:.3f} [{summary.ci[0]:.3f}, {summary.ci[1]:.3f}]"


def _size_cell(report: SuiteReport, size) -> str:
    return f"{size:,}" if report.multi_size and size is not None else ""


def confirmatory_table(report: SuiteReport) -> Table:
    """The confirmatory family: raw and Holm-adjusted p-values (report appendix and primary section)."""
    rows = []
    for c in report.analysis.confirmatory:
        fmt = _diff if c.endpoint.kind == "accuracy" else _ratio
        rows.append({"variant": c.variant, "size": _size_cell(report, c.train_size),
                     "endpoint": endpoint_label(report, c.endpoint),
                     "estimate": f"{fmt_bound(c.estimate, fmt)} {fmt_interval(c.ci, fmt)}".strip(),
                     "test": c.test.name if c.test else "not tested",
                     "p": fmt_p(c.test.p_value) if c.test else "", "p_floor": fmt_p(c.test.p_floor) if c.test else "",
                     "p_holm": fmt_p(c.p_adjusted), "result": "detected" if c.detected else "not detected"})
    estimate = "difference [95% CI]" if report.analysis.settings.primary.kind == "accuracy" \
        else "ratio of medians [95% CI]"
    return Table("confirmatory family (Holm-adjusted)", [
        Column("variant", "arm"), Column("size", "labels"), Column("endpoint", "endpoint", terminal=False),
        Column("estimate", estimate), Column("test", "test", terminal=False), Column("p", "p"),
        Column("p_floor", "smallest possible p", terminal=False), Column("p_holm", "p (Holm)"),
        Column("result", "result")], rows)


def accuracy_table(report: SuiteReport, size) -> Table:
    """Per arm at one size: accuracy and balanced accuracy with CIs, and the paired difference from the baseline."""
    rows = []
    for variant in _variants(report):
        arm = _arm(report, variant, size)
        if arm is None:
            continue
        test = arm.accuracy.get("test_accuracy")
        c = _find(report, variant, size, "test_accuracy")
        balanced = _find(report, variant, size, "test_balanced_accuracy")
        row = {"variant": variant, "n": str(arm.n), "test": _interval_text(test),
               "balanced": _interval_text(arm.accuracy.get("test_balanced_accuracy")),
               "balanced_mean": _mean_text(arm.accuracy.get("test_balanced_accuracy")),
               "val": _interval_text(arm.accuracy.get("best_val_accuracy")),
               "ci_method": test.ci_method if test else ""}
        if c is None:
            row["difference"] = "baseline" if variant == report.baseline else ""
        else:
            row.update({"difference": f"{fmt_bound(c.estimate, _diff)} {fmt_interval(c.ci, _diff)}".strip(),
                        "p": fmt_p(c.test.p_value) if c.test else "", "test_name": c.test.name if c.test else "",
                        "mde": f"±{c.mde:.3f}" if c.mde is not None else "", "se": _se_text(c.difference_ci),
                        "welch": fmt_p(c.welch_p), "hedges": "" if c.hedges_g is None or not np.isfinite(c.hedges_g)
                        else f"{c.hedges_g:+.2f}",
                        "tost": "" if c.equivalence is None else
                        f"{'yes' if c.equivalence.equivalent else 'no'} (±{c.equivalence.margin:g}, "
                        f"p {fmt_p(c.equivalence.p_value)})",
                        "balanced_difference": "" if balanced is None else
                        f"{fmt_bound(balanced.estimate, _diff)} {fmt_interval(balanced.ci, _diff)}".strip()})
        rows.append(row)
    where = _where(report, size)
    methods = sorted({row["ci_method"] for row in rows if row.get("ci_method")})
    return Table(f"test accuracy{where} (best-validation checkpoint; baseline {report.baseline})", [
        Column("variant", "arm"), Column("n", "runs"), Column("test", "accuracy [95% CI]"),
        Column("balanced", "balanced acc. [95% CI]", terminal=False), Column("balanced_mean", "balanced", files=False),
        Column("val", "best val. acc. [95% CI]", terminal=False),
        Column("difference", "vs baseline [95% CI]"), Column("p", "p"),
        Column("test_name", "test", terminal=False),
        Column("balanced_difference", "balanced acc. vs baseline", terminal=False),
        Column("se", "SE: seeds / test galaxies", terminal=False), Column("mde", "detectable (80%)", terminal=False), Column("tost", "equivalent (TOST)", terminal=False),
        Column("welch", "Welch p (info)", terminal=False), Column("hedges", "Hedges g", terminal=False)],
        rows, note="Intervals: " + "; ".join(methods) if methods else "")


def _mean_text(summary: stats.AccuracySummary | None) -> str:
    return "" if summary is None else f"{summary.mean:.3f}"


def _se_text(ci: stats.DifferenceCI | None) -> str:
    """Where a difference's uncertainty comes from: its standard error over seeds and over test galaxies."""
    if ci is None:
        return ""
    return " / ".join("n/a" if se is None else f"{se:.3f}" for se in (ci.se_seeds, ci.se_images))


def recall_table(report: SuiteReport) -> Table | None:
    """Per-class test recall of the run each arm would export (best validation accuracy)."""
    if not report.classes:
        return None
    rows = []
    for variant in _variants(report):
        best = exported_run(report, variant)
        if best is None or not best.get("recall"):
            continue
        row = {"variant": variant, "run": _run_name(report, best).removeprefix(f"{variant} "),
               "accuracy": f"{best['test_accuracy']:.3f}"}
        if best.get("test_balanced_accuracy") is not None:
            row["balanced"] = f"{best['test_balanced_accuracy']:.3f}"
        row.update({f"class{i}": f"{value:.2f}" for i, value in enumerate(best["recall"])})
        rows.append(row)
    if not rows:
        return None
    columns = [Column("variant", "arm"), Column("run", "run"), Column("accuracy", "accuracy"),
               Column("balanced", "balanced")]
    columns += [Column(f"class{i}", name) for i, name in enumerate(report.classes)]
    return Table("per-class test recall of each arm's exported run (chosen on validation)", columns, rows)


def threshold_table(report: SuiteReport, threshold: float, size) -> Table:
    """Time to one threshold at one size: reach counts, KM medians of epochs and costs, ratio, permutation p."""
    rows, arms = [], {v: _arm(report, v, size) for v in _variants(report)}
    flops = [km.median.value for a in arms.values() if (km := _arm_km(a, "flops", threshold)) and km.median.value]
    seconds = [km.median.value for a in arms.values()
               if (km := _arm_km(a, "device_seconds", threshold)) and km.median.value]
    flop_unit, second_unit = flops_unit(flops), seconds_unit(seconds)
    for variant, arm in arms.items():
        if arm is None:
            continue
        epochs = _arm_km(arm, "epochs", threshold)
        row = {"variant": variant}
        if epochs is not None:
            row.update({"reached": f"{epochs.n_reached}/{epochs.n}", "median": _median_text(epochs.median)})
        for name, unit, key in (("flops", flop_unit, "flops"), ("device_seconds", second_unit, "seconds")):
            km = _arm_km(arm, name, threshold)
            row[key] = "" if km is None else fmt_bound(km.median, unit)
        c = _find(report, variant, size, "epochs", threshold)
        if c is None:
            row["ratio"] = "baseline" if variant == report.baseline else ""
        else:
            row.update({"ratio": "neither median reached" if c.estimate.side == "unknown" else
                        f"{fmt_bound(c.estimate, _ratio)} {fmt_interval(c.ci, _ratio)}".strip(),
                        "p": fmt_p(c.test.p_value) if c.test else "not tested",
                        "p_faster": "" if c.probability_of_improvement is None
                        else f"{c.probability_of_improvement:.2f}"})
        rows.append(row)
    where = f", {size_label(report, size)}" if report.multi_size else ""
    return Table(f"time to {threshold:g} {report.threshold_metric}{where} (baseline {report.baseline})", [
        Column("variant", "arm"), Column("reached", "reached"), Column("median", "median epochs"),
        Column("ratio", "ratio [95% CI]"), Column("p", "log-rank p"), Column("p_faster", "P(faster)", terminal=False),
        Column("flops", f"median {flop_unit.label}", terminal=False),
        Column("seconds", f"median {second_unit.label}", terminal=False)], rows)


THRESHOLD_NOTE = ("Medians are Kaplan-Meier estimates: runs that never got there count as censored at their totals, "
                  "not dropped; \"not reached (> x)\": fewer than half got there by x. Ratio: median of the arm over "
                  "the baseline's, with a bootstrap interval that recomputes both medians; a bound with > or < is "
                  "open on that side. log-rank p: exact permutation test. Costs count training only; evaluation is "
                  "its own column in the runs table.")


def _median_text(median: stats.Bound, fmt=_epochs) -> str:
    """A KM median: "3.5", or "not reached (> 12)" where fewer than half the runs got there."""
    return f"not reached ({fmt_bound(median, fmt)})" if median.side == "at_least" else fmt_bound(median, fmt)


def cost_table(report: SuiteReport, metric: str, size) -> Table | None:
    """Per arm: fine-tuning cost with its CI, full pretraining, their sum for one model, and break-even."""
    items = [c for c in report.analysis.costs if c.metric == metric and c.train_size == size]
    if not items:
        return None
    chooser = flops_unit if metric == "train_flops" else seconds_unit
    unit = chooser([c.estimate.value for c in items] + [c.pretraining for c in items])
    rows = []
    for c in items:
        row = {"variant": c.variant, "scope": c.scope,
               "fine_tune": f"{fmt_bound(c.estimate, unit)} {fmt_interval(c.ci, unit)}".strip(),
               "pretraining": "" if c.pretraining is None else unit(c.pretraining)}
        if c.pretraining is not None and c.estimate.value is not None:
            row["one_model"] = fmt_bound(stats.Bound(c.estimate.value + c.pretraining, c.estimate.side), unit)
        if c.break_even is not None:
            row["break_even"] = ("never" if c.break_even.never else
                                 f"{c.break_even.fine_tunes} fine-tune{'s' if c.break_even.fine_tunes != 1 else ''}")
        elif c.variant == report.baseline:
            row["break_even"] = "baseline"
        if any(r.get("init", "").startswith("imagenet") for r in report.runs if r["variant"] == c.variant):
            row["pretraining"] = "outside galbench's view"
        rows.append(row)
    name = "FLOPs" if metric == "train_flops" else "device time"
    where = f", {size_label(report, size)}" if report.multi_size else ""
    scope = items[0].scope if items[0].scope == "full training" else f"{items[0].scope} {report.threshold_metric}"
    return Table(f"cost in {name}, {scope} ({unit.label}{where})", [
        Column("variant", "arm"), Column("scope", "scope", terminal=False),
        Column("fine_tune", "fine-tuning [95% CI]"), Column("pretraining", "pretraining"),
        Column("one_model", "one model"), Column("break_even", "pays back after")], rows,
        note="Fine-tuning: one run's cost with its 95% interval over runs; pretraining: counted in full, once; "
             "one model: the two together; pays back after: the number of fine-tunes from which pretraining once "
             "and that many fine-tunes cost no more than as many trainings of the baseline.")


def labels_saved_table(report: SuiteReport) -> Table | None:
    """Labels the baseline needs to match each arm at each size, with CIs."""
    entries = report.analysis.labels_saved
    if not entries:
        return None
    rows = [{"variant": e.variant, "size": f"{e.train_size:,}", "accuracy": f"{e.arm_accuracy:.3f}",
             "needed": _labels_needed(e.baseline_labels), "ci": _labels_interval(e.ci),
             "note": "" if e.baseline_monotone else f"{report.baseline}'s curve dips: first crossing used"}
            for e in entries]
    metric = ACCURACY_LABELS[entries[0].metric]
    return Table(f"labels saved: labelled galaxies {report.baseline} needs to match each arm's {metric}", [
        Column("variant", "arm"), Column("size", "arm's labels"), Column("accuracy", f"arm's {metric}"),
        Column("needed", f"{report.baseline} needs"), Column("ci", "95% CI"), Column("note", "note", terminal=False)],
        rows, note="Interpolated linearly in log(labels) on the baseline's mean accuracy curve.")


def _labels_interval(ci: tuple[stats.Bound, stats.Bound]) -> str:
    """A labels-saved interval: "[235, 552]", "[910, more than all]", or "more than all" at both ends."""
    low, high = (_labels_needed(b) for b in ci)
    return low if low == high else f"[{low}, {high}]"


def _labels_needed(bound: stats.Bound) -> str:
    if bound.side == "at_least":
        return "more than all"
    if bound.side == "at_most":
        return f"≤ {bound.value:,.0f}"
    return fmt_bound(bound, _count)


def exploratory_table(report: SuiteReport) -> Table:
    """Every exploratory comparison, unadjusted (appendix)."""
    rows = []
    for c in report.analysis.exploratory:
        fmt = _diff if c.endpoint.kind == "accuracy" else _ratio
        rows.append({"endpoint": endpoint_label(report, c.endpoint), "variant": c.variant,
                     "size": _size_cell(report, c.train_size),
                     "estimate": f"{fmt_bound(c.estimate, fmt)} {fmt_interval(c.ci, fmt)}".strip(),
                     "test": c.test.name if c.test else "not tested", "p": fmt_p(c.test.p_value) if c.test else ""})
    return Table("exploratory comparisons (unadjusted)", [
        Column("endpoint", "endpoint"), Column("variant", "arm"), Column("size", "labels"),
        Column("estimate", "estimate [95% CI]"), Column("test", "test"), Column("p", "p (unadjusted)")], rows)


def runs_table(report: SuiteReport) -> Table:
    """Every finished run: accuracies and its training and evaluation totals (evaluation as its own column)."""
    totals = [r["totals"] for r in report.runs]
    flop_unit = flops_unit([t.get("train_flops") for t in totals])
    second_unit = seconds_unit([t.get("device_seconds") for t in totals])
    rows = []
    for r in report.runs:
        t = r["totals"]
        rows.append({"run": _run_name(report, r), "best_val": f"{r['best_val_accuracy']:.3f}",
                     "test": f"{r['test_accuracy']:.3f}",
                     "balanced": "" if r.get("test_balanced_accuracy") is None else f"{r['test_balanced_accuracy']:.3f}",
                     "epochs": _epochs(t["epochs"]) if t.get("epochs") is not None else "",
                     "train_flops": "" if t.get("train_flops") is None else flop_unit(t["train_flops"]),
                     "eval_flops": "" if t.get("eval_flops") is None else flop_unit(t["eval_flops"]),
                     "train_seconds": "" if t.get("device_seconds") is None else second_unit(t["device_seconds"]),
                     "eval_seconds": "" if t.get("eval_device_seconds") is None
                     else second_unit(t["eval_device_seconds"]),
                     "flags": ", ".join(filter(None, ["shared GPU" if r.get("shared_gpu") else "",
                                                      f"{r['retries']} retries" if r.get("retries") else ""]))})
    return Table(f"runs ({flop_unit.label}, {second_unit.label})", [
        Column("run", "run"), Column("best_val", "best val."), Column("test", "test acc."),
        Column("balanced", "balanced"), Column("epochs", "epochs"), Column("train_flops", "training"),
        Column("eval_flops", "evaluation"), Column("train_seconds", "training time"),
        Column("eval_seconds", "evaluation time"), Column("flags", "flags")], rows)


# --- calibration and pretraining probes (where the run directory carries them) ----------------------------

def calibrations(report: SuiteReport) -> dict[str, dict]:
    """Each exported arm's calibration record (exports.json meta.calibration), where export wrote one."""
    found = {}
    for name, entry in report.exports.items():
        raw = (entry.get("meta") or {}).get("calibration") if isinstance(entry, dict) else None
        if name == "winner" or not raw:
            continue
        try:
            found[name] = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            continue
    return found


def calibration_table(report: SuiteReport) -> Table | None:
    """Temperature and ECE before and after temperature scaling, per exported arm."""
    found = calibrations(report)
    if not found:
        return None
    rows = [{"variant": name, "temperature": f"{c['temperature']:.3f}", "before": f"{c['ece_before']:.4f}",
             "after": f"{c['ece_after']:.4f}", "bins": str(c.get("bins", ""))} for name, c in found.items()]
    return Table("calibration of the exported models (validation split)", [
        Column("variant", "arm"), Column("temperature", "temperature"), Column("before", "ECE before"),
        Column("after", "ECE after"), Column("bins", "bins")], rows)


def probe_curves(report: SuiteReport) -> dict[str, list[dict]]:
    """The k-NN and linear-probe accuracies logged during each pretrained arm's pretraining, where present."""
    found = {}
    for row in report.runs:
        curve = (row.get("pretrain_meta") or {}).get("probe_curve")
        if curve and row["variant"] not in found:
            found[row["variant"]] = curve
    return found


# --- figures -------------------------------------------------------------------------------------------------

def _curves(report: SuiteReport, key: str) -> dict[str, list[list[tuple[float, float]]]]:
    size = _largest_size(report)
    return {v: [[(p[key], p["val_accuracy"]) for p in r["curve"] if p.get(key) is not None]
                for r in report.runs if r["variant"] == v and r.get("train_size") == size and r["curve"]]
            for v in _variants(report)}


def _pretraining_offsets(report: SuiteReport, metric: str) -> dict[str, float]:
    size = _largest_size(report)
    return {c.variant: c.pretraining for c in report.analysis.costs
            if c.metric == metric and c.train_size == size and c.pretraining}


def figures(report: SuiteReport) -> list[Figure]:
    """The report's figures (SVG) with alt text; the first is the headline figure."""
    from galbench.analysis import plots

    found = [_headline_figure(report)]
    size = _largest_size(report)
    where = _where(report, size)
    found.append(Figure("learning_curves", plots.learning_curves(
        _curves(report, "epochs"), "epochs", f"{report.threshold_metric} during training{where}: median over runs, "
                                             "band: interquartile range"),
        f"Learning curves{where}: {report.threshold_metric} against epochs for "
        + ", ".join(_arm_curve_alt(report, v) for v in _variants(report)) + ".", f"Learning curves{where}."))
    for key, unit, label, metric in (("train_flops", "FLOP", "training FLOPs", "train_flops"),
                                     ("device_seconds", "s", "device-seconds", "device_seconds")):
        offsets = _pretraining_offsets(report, metric)
        shifted = ", ".join(f"{v} starts after its pretraining ({plots._eng(o, unit)})" for v, o in offsets.items())
        found.append(Figure(f"accuracy_vs_{key}", plots.learning_curves(
            _curves(report, key), f"{label} (log scale), pretraining included", f"accuracy against {label}{where}",
            unit=unit, offsets=offsets),
            f"Validation accuracy against cumulative {label} on a log axis, one line per arm"
            + (f"; {shifted}" if shifted else "; no arm has a pretraining cost on galbench's bill") + ".",
            f"Accuracy against {label}; pretrained arms are shifted right by their full pretraining cost."))
    km = _km_figure(report)
    if km:
        found.append(km)
    strips = {v: [r["thresholds"] for r in report.runs if r["variant"] == v and r.get("train_size") == size]
              for v in _variants(report)}
    reached = "; ".join(f"{v}: " + ", ".join(f"{sum(t[str(th)]['reached'] for t in rows)}/{len(rows)} at {th:g}"
                                              for th in report.thresholds) for v, rows in strips.items())
    found.append(Figure("time_to_threshold", plots.time_to_threshold_strip(strips, report.thresholds,
                                                                           report.threshold_metric),
                        f"Epochs to each threshold per run{where}; runs reaching it: {reached}.",
                        f"Epochs to each threshold{where}; open markers never got there."))
    best = winner(report)
    if best and report.classes and best.get("confusion"):
        title = f"winner (chosen on validation): {_run_name(report, best)}, test accuracy {best['test_accuracy']:.3f}"
        found.append(Figure("confusion_winner", plots.confusion_plot(best["confusion"], report.classes, title),
                            f"Confusion matrix of the {title}; rows true class, columns predicted, counts "
                            + "; ".join(f"true {name}: " + ", ".join(map(str, row))
                                        for name, row in zip(report.classes, best["confusion"], strict=False)) + ".",
                            f"Confusion matrix of the winner, chosen on {report.threshold_metric}."))
    calibration = calibrations(report)
    if calibration:
        found.append(Figure("reliability", plots.reliability_diagrams(calibration),
                            "Reliability diagrams per exported arm: accuracy against confidence in "
                            f"{next(iter(calibration.values())).get('bins', 15)} bins before and after temperature "
                            "scaling; " + "; ".join(f"{n}: ECE {c['ece_before']:.3f} before, {c['ece_after']:.3f} "
                                                    f"after (T = {c['temperature']:.2f})"
                                                    for n, c in calibration.items()) + ".",
                            "Reliability diagrams: open dashed before, filled solid after temperature scaling."))
    probes = probe_curves(report)
    if probes:
        found.append(Figure("probe_curves", plots.probe_curves(probes),
                            "Representation quality during pretraining: " + "; ".join(
                                f"{v}: linear probe {c[0]['linear_probe_accuracy']:.3f} to "
                                f"{c[-1]['linear_probe_accuracy']:.3f}, k-NN {c[0]['knn_accuracy']:.3f} to "
                                f"{c[-1]['knn_accuracy']:.3f} over {c[-1]['epoch']:g} epochs"
                                for v, c in probes.items()) + ".",
                            "k-NN and linear-probe validation accuracy during pretraining."))
    return [f for f in found if f is not None]


def _arm_curve_alt(report: SuiteReport, variant: str) -> str:
    arm = _arm(report, variant, _largest_size(report))
    test = arm.accuracy.get("test_accuracy") if arm else None
    return f"{variant} ({arm.n if arm else 0} runs" + (f", test accuracy {test.mean:.3f})" if test else ")")


def _chance_for(report: SuiteReport, metric: str) -> float | None:
    """What always guessing one class scores on `metric`: the largest class's share of the test split for
    accuracy; 1 / (number of classes) for balanced accuracy, whichever class is guessed."""
    if metric == "test_balanced_accuracy":
        return 1 / len(report.classes) if report.classes else None
    chance = chance_level(report)
    return chance[0] if chance else None


def _headline_figure(report: SuiteReport) -> Figure:
    from galbench.analysis import plots

    primary = report.analysis.settings.primary
    metric = primary.field if primary.kind == "accuracy" else "test_accuracy"
    label = ACCURACY_LABELS.get(metric, metric)
    chance_value = _chance_for(report, metric)
    labelled = [s for s in _sizes(report) if s is not None]
    if len(labelled) + (None in _sizes(report)) > 1 and labelled:
        series, described = {}, []
        for variant in _variants(report):
            points = [(a.train_size, a.accuracy[metric]) for a in report.analysis.arms
                      if a.variant == variant and a.train_size is not None and metric in a.accuracy]
            points.sort(key=lambda p: p[0])
            if points:
                series[variant] = ([p[0] for p in points], [p[1].mean for p in points],
                                   [(p[1].ci or (p[1].mean,) * 2)[0] for p in points],
                                   [(p[1].ci or (p[1].mean,) * 2)[1] for p in points])
                described.append(f"{variant}: " + ", ".join(f"{s.mean:.3f} at {n:,}" for n, s in points))
        return Figure("label_efficiency", plots.label_efficiency(series, chance_value, label),
                      f"{label.capitalize()} against labelled training galaxies (log axis) per arm, with 95% "
                      "interval bands; " + "; ".join(described) + ".",
                      f"Label efficiency: {label} against the number of labelled training galaxies.")
    if primary.kind == "time":
        figure = _km_figure(report, primary.threshold, primary.field)
        if figure:
            return figure
    size = _largest_size(report)
    arms = []
    for variant in _variants(report):
        arm = _arm(report, variant, size)
        summary = arm.accuracy.get(metric) if arm else None
        if summary:
            arms.append((variant, list(summary.values), summary.mean, summary.ci))
    return Figure("headline", plots.accuracy_by_arm(arms, label, chance_value,
                                                    f"{label} per arm: runs (open), mean and 95% interval"),
                  f"{label.capitalize()} per arm, each run a point with the mean and its 95% interval: "
                  + "; ".join(f"{v} {m:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + f" over {len(vals)} "
                              f"run{'s' if len(vals) != 1 else ''}" for v, vals, m, ci in arms)
                  + (f"; chance level (one class always guessed) {chance_value:.3f}." if chance_value else "."),
                  f"{label.capitalize()} per arm.")


def _km_figure(report: SuiteReport, threshold: float | None = None, field_: str = "epochs") -> Figure | None:
    from galbench.analysis import plots

    threshold = threshold if threshold is not None else report.analysis.main_threshold
    if threshold is None:
        return None
    name = next((k for k, v in stats.COST_ENDPOINTS.items() if v == field_), field_)
    size = _largest_size(report)
    found = {v: km for v in _variants(report) if (km := _arm_km(_arm(report, v, size), name, threshold))}
    if not found:
        return None
    fmt, unit = cost_format(field_, [km.median.value for km in found.values()])
    curves = {v: (list(km.times), list(km.survival), km.n) for v, km in found.items()}
    described = [f"{v} reached it in {km.n_reached} of {km.n} runs, median {_median_text(km.median, fmt)} {unit}"
                 for v, km in found.items()]
    label = COST_LABELS.get(field_, field_)
    where = _where(report, size)
    return Figure("kaplan_meier", plots.kaplan_meier_curves(
        curves, label, f"Kaplan-Meier: time to {threshold:g} {report.threshold_metric}{where}",
        unit={"train_flops": "FLOP", "device_seconds": "s"}.get(field_, "")),
        f"Kaplan-Meier curves of the fraction of runs not yet at {threshold:g} {report.threshold_metric}{where} "
        f"against {label}: " + "; ".join(described) + ".",
        f"Kaplan-Meier curves for {threshold:g} {report.threshold_metric}{where}.")


# --- the document --------------------------------------------------------------------------------------------

def sections(report: SuiteReport, found: list[Figure]) -> tuple[list[Section], list[Section]]:
    """The report's body and appendix, in order, shared by the Markdown and HTML renderers.

    The first figure (if any) heads the answer; the others go to their sections by name.
    """
    others = {f.name: f for f in found[1:]}

    def pick(*names: str) -> list[Figure]:
        return [others[name] for name in names if name in others]

    body = [Section("answer", "The answer", paragraphs=headline(report) + [primary_sentence(report)],
                    figures=found[:1]),
            Section("data", "Dataset", facts=dataset_facts(report)),
            Section("design", "Design", facts=design_facts(report))]
    sizes = _sizes(report)
    accuracy = Section("accuracy", "Accuracy", tables=[accuracy_table(report, s) for s in sizes],
                       paragraphs=[verdict(report, c) for c in _comparisons(report)
                                   if c.endpoint.field == "test_accuracy" and not c.confirmatory])
    recall = recall_table(report)
    if recall:
        accuracy.tables.append(recall)
    accuracy.figures += pick("headline", "confusion_winner")
    body.append(accuracy)
    labels = labels_saved_table(report)
    if labels:
        body.append(Section("labels", "Labels saved", paragraphs=labels_sentences(report), tables=[labels],
                            figures=pick("label_efficiency")))
    time = Section("time", "Time to threshold", tables=[threshold_table(report, t, s) for s in sizes
                                                        for t in report.thresholds])
    time.paragraphs = [verdict(report, c) for c in _comparisons(report)
                       if c.endpoint.field == "epochs" and c.endpoint.threshold == report.analysis.main_threshold
                       and c.train_size == _largest_size(report)] + [THRESHOLD_NOTE]
    time.figures = pick("kaplan_meier", "time_to_threshold", "learning_curves")
    body.append(time)
    costs = Section("costs", "Cost", paragraphs=cost_sentences(report) + cost_notes(report),
                    tables=[t for s in sizes for t in (cost_table(report, "train_flops", s),
                                                       cost_table(report, "device_seconds", s)) if t],
                    figures=pick("accuracy_vs_train_flops", "accuracy_vs_device_seconds"))
    body.append(costs)
    calibration = calibration_table(report)
    if calibration:
        body.append(Section("calibration", "Calibration", tables=[calibration], figures=pick("reliability")))
    if "probe_curves" in others:
        body.append(Section("probes", "Pretraining probes", figures=pick("probe_curves")))
    if report.analysis.notes:
        body.append(Section("notes", "Notes on the statistics", paragraphs=list(report.analysis.notes)))
    appendix = [Section("confirmatory", "Appendix: the confirmatory family",
                        paragraphs=[primary_sentence(report)], tables=[confirmatory_table(report)]),
                Section("exploratory", "Appendix: exploratory comparisons", tables=[exploratory_table(report)]),
                Section("runs", "Appendix: runs and environment", tables=[runs_table(report)],
                        paragraphs=[environment_line(report)])]
    return body, appendix


OPTIONAL_FIELDS = {  # results-row field -> what the report cannot show without it
    "test_balanced_accuracy": "balanced accuracy",
    "test_labels": "intervals that resample test galaxies (per-image labels), and McNemar's test",
    "train_size": "the number of labelled training galaxies",
    "shared_gpu": "whether runs shared a GPU",
}


def missing_fields(report: SuiteReport) -> str:
    """What this run directory does not record (older galbench versions), so the report cannot show."""
    return "; ".join(what for key, what in OPTIONAL_FIELDS.items() if all(r.get(key) is None for r in report.runs))


def cost_notes(report: SuiteReport) -> list[str]:
    """What the cost figures include, and which runs' timings are less trustworthy."""
    notes = ["FLOPs are the primary cost; device time is shown with a 95% interval across runs. Fine-tuning costs "
             "count training only; evaluation is its own column in the runs table. A pretraining is counted in "
             "full for one model, never divided over the runs that share it."]
    shared = [_run_name(report, r) for r in report.runs if r.get("shared_gpu")]
    if shared:
        notes.append("Runs that shared a GPU (their device time and energy include the other runs' load): "
                     + ", ".join(shared) + ".")
    if any(r.get("init", "").startswith("imagenet") for r in report.runs):
        notes.append(IMAGENET_NOTE)
    retried = [f"{_run_name(report, r)} ({r['retries']})" for r in report.runs if r.get("retries")]
    if retried:
        notes.append("Runs retried after a worker failure (each resumed from its last checkpoint): "
                     + ", ".join(retried) + ".")
    return notes


def environment_line(report: SuiteReport) -> str:
    """What the results were measured on."""
    env = report.environment
    if not env:
        return "environment.json is missing: the machine is not recorded."
    return (f"Measured on {env.get('device_name', 'an unrecorded device')} ({env.get('device', '?')}), "
            f"torch {env.get('torch', '?')}, precision {env.get('precision', '?')}, galbench {env.get('galbench', '?')}.")


# --- renderers -----------------------------------------------------------------------------------------------

def _rich_table(table: Table) -> RichTable:
    rich = RichTable(title=table.title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    columns = table.shown(terminal=True)
    for column in columns:
        first = column is columns[0]
        rich.add_column(column.label, justify="left" if first else "right", overflow="fold",
                        no_wrap=not first)
    for row in table.rows:
        rich.add_row(*[row.get(c.key, "") for c in columns])
    return rich


def terminal_report(report: SuiteReport) -> list:
    """Rich renderables for the terminal: the answer, the status, and compact tables (details in the files)."""
    from rich.text import Text

    status, incomplete = run_status(report)
    parts = [Text(f"galbench report: {report.name}", style="bold"),
             Text(status + "\n", style="yellow" if incomplete else "")]
    parts += [Text(sentence + "\n") for sentence in headline(report)]
    parts.append(Text(primary_sentence(report), style="dim"))
    parts.append(_rich_table(confirmatory_table(report)))
    size = _largest_size(report)
    parts.append(_rich_table(accuracy_table(report, size)))
    labels = labels_saved_table(report)
    if labels:
        parts.append(_rich_table(labels))
    parts += [_rich_table(threshold_table(report, t, size)) for t in report.thresholds]
    cost = cost_table(report, "train_flops", size)
    if cost:
        parts.append(_rich_table(cost))
    best = winner(report)
    if best:
        parts.append(Text(f"winner (chosen on {report.threshold_metric} {_selection_score(best):.3f}): "
                          f"{_run_name(report, best)}, test accuracy {best['test_accuracy']:.3f}"))
    parts += [Text(note) for note in cost_notes(report)[1:] + report.analysis.notes]
    parts.append(Text(environment_line(report), style="dim"))
    parts.append(Text(f"every table, per-size details and the appendix: {report.path / 'report' / 'report.html'}",
                      style="dim"))
    return parts


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_table(table: Table) -> str:
    columns = table.shown()
    lines = [f"**{table.title}**", "", "| " + " | ".join(c.label for c in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_markdown_cell(row.get(c.key, "")) for c in columns) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"*{table.note}*"]
    return "\n".join(lines)


def markdown_report(report: SuiteReport, found: list[Figure]) -> str:
    """report.md: the same sections as the HTML page, figures as SVG files beside it."""
    body, appendix = sections(report, found)
    lines = [f"# galbench report: {report.name}", "", run_status(report)[0], ""]
    for section in body + appendix:
        lines += [f"## {section.title}", ""]
        lines += [f"- **{label}**: {value}" for label, value in section.facts]
        if section.facts:
            lines.append("")
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        for table in section.tables:
            lines += [_markdown_table(table), ""]
        for figure in section.figures:
            lines += [f"![{figure.alt}]({figure.name}.svg)", "", f"*{figure.caption}*", ""]
    return "\n".join(lines)


def html_report(report: SuiteReport, found: list[Figure]) -> str:
    """report.html: a self-contained page (SVG figures embedded) from the jinja2 template."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.PackageLoader("galbench.analysis", "templates"),
                                     autoescape=True, trim_blocks=True, lstrip_blocks=True)
    body, appendix = sections(report, found)
    status, incomplete = run_status(report)
    return environment.get_template("report.html.j2").render(
        title=f"galbench report: {report.name}", body=body, appendix=appendix, status=status,
        incomplete=incomplete)


def _plain(value):
    """JSON-ready: dataclasses to dicts, tuples to lists, non-finite floats to None."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


RUN_KEYS = ("variant", "seed", "train_size", "model", "init", "finished", "best_val_accuracy", "test_accuracy",
            "test_balanced_accuracy", "recall", "totals", "thresholds", "replicate", "pretrain_id", "shared_gpu",
            "retries")


def report_json(report: SuiteReport) -> dict:
    """Every number and sentence of the report in machine-readable form."""
    analysis = report.analysis
    status, incomplete = run_status(report)
    best = winner(report)
    return _plain({
        "suite": report.name, "run_dir": str(report.path), "baseline": report.baseline,
        "thresholds": report.thresholds, "threshold_metric": report.threshold_metric,
        "train_sizes": analysis.train_sizes,
        "runs_found": {**_status_counts(report.records), "planned": report.planned_runs, "complete": not incomplete,
                       "status": status, "records": report.records},
        "headline": headline(report), "primary": primary_sentence(report),
        "settings": analysis.settings,
        "dataset": dict(dataset_facts(report)), "design": dict(design_facts(report)),
        "chance_level": (chance_level(report) or (None,))[0],
        "confirmatory": analysis.confirmatory, "exploratory": analysis.exploratory,
        "verdicts": [verdict(report, c) for c in _comparisons(report)],
        "arms": analysis.arms, "labels_saved": analysis.labels_saved, "costs": analysis.costs,
        "cost_notes": cost_notes(report), "main_threshold": analysis.main_threshold, "notes": analysis.notes,
        "winner": None if best is None else {k: best.get(k) for k in ("variant", "seed", "train_size",
                                                                     "best_val_accuracy", "test_accuracy")},
        "calibration": calibrations(report), "environment": report.environment,
        "runs": [{k: r.get(k) for k in RUN_KEYS} for r in report.runs],
    })


def write_report(run_dir: str | Path) -> tuple[SuiteReport, list[Path]]:
    """Write report.md, report.html, report.json and the SVG figures into RUN_DIR/report."""
    from galbench.fileio import write_json_atomic, write_text_atomic

    report = load_report(run_dir)
    found = figures(report)
    folder = report.path / "report"
    for figure in found:
        write_text_atomic(folder / f"{figure.name}.svg", figure.svg)
    write_text_atomic(folder / "report.md", markdown_report(report, found))
    write_text_atomic(folder / "report.html", html_report(report, found))
    write_json_atomic(folder / "report.json", report_json(report))
    return report, [folder / "report.md", folder / "report.html", folder / "report.json"]


# --- two run directories, and the end of `galbench run --no-report` -----------------------------------------

ENVIRONMENT_KEYS = ("device_name", "device", "torch", "cuda", "precision", "galbench")


def compare_tables(a: SuiteReport, b: SuiteReport) -> tuple[list[str], list[RichTable]]:
    """Two suites side by side per arm: test accuracy, then KM median epochs to each shared threshold."""
    warnings_ = [f"environments differ in {key}: {a.environment.get(key)} (A) vs {b.environment.get(key)} (B)"
                 for key in ENVIRONMENT_KEYS if a.environment.get(key) != b.environment.get(key)]
    accuracy = Table(f"A = {a.path}\nB = {b.path}", [
        Column("variant", "arm"), Column("n", "runs A/B"), Column("a", "test acc. A"), Column("b", "test acc. B"),
        Column("diff", "B - A")], [])
    time = Table(f"time to {a.threshold_metric} thresholds, A and B", [
        Column("variant", "arm"), Column("threshold", "threshold"), Column("reached_a", "reached A"),
        Column("reached_b", "reached B"), Column("a", "median epochs A"), Column("b", "median epochs B")], [])
    for variant in _variants(a):
        arm_a, arm_b = _arm(a, variant, _largest_size(a)), _arm(b, variant, _largest_size(b))
        if arm_a is None or arm_b is None:
            continue
        acc_a, acc_b = arm_a.accuracy.get("test_accuracy"), arm_b.accuracy.get("test_accuracy")
        accuracy.rows.append({"variant": variant, "n": f"{arm_a.n}/{arm_b.n}", "a": _acc(acc_a.mean) if acc_a else "",
                              "b": _acc(acc_b.mean) if acc_b else "",
                              "diff": _diff(acc_b.mean - acc_a.mean) if acc_a and acc_b else ""})
        for t in (t for t in a.thresholds if t in b.thresholds):
            km_a, km_b = _arm_km(arm_a, "epochs", t), _arm_km(arm_b, "epochs", t)
            if km_a and km_b:
                time.rows.append({"variant": variant, "threshold": f"{t:g}",
                                  "reached_a": f"{km_a.n_reached}/{km_a.n}", "reached_b": f"{km_b.n_reached}/{km_b.n}",
                                  "a": _median_text(km_a.median), "b": _median_text(km_b.median)})
    return warnings_, [_rich_table(accuracy), _rich_table(time)]


def run_summary_table(results: list[dict], thresholds: list[float], title: str = "suite summary") -> RichTable:
    """What `galbench run --no-report` trained: per arm, finished runs, their test accuracies, reach counts."""
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == variant]
        done = [r for r in runs if r["finished"]]
        accuracies = sorted(r["test_accuracy"] for r in done if r["test_accuracy"] is not None)
        row = {"variant": variant, "runs": f"{len(done)}/{len(runs)}",
               "test": f"{accuracies[0]:.3f} to {accuracies[-1]:.3f}" if accuracies else ""}
        row.update({f"t{i}": f"{sum(r['thresholds'][str(t)]['reached'] for r in done)}/{len(done)}"
                    for i, t in enumerate(thresholds)})
        rows.append(row)
    return _rich_table(Table(title, [Column("variant", "arm"), Column("runs", "finished"),
                                     Column("test", "test accuracy (range)"),
                                     *[Column(f"t{i}", f"reached {t:g}") for i, t in enumerate(thresholds)]], rows))
