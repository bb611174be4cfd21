"""Rendering: rich tables for the terminal, Markdown and HTML reports. Renders results; computes no statistics."""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
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
    else:
        table.add_row("IMAGES", "none (catalog only)")
    for column in ("ra", "dec"):
        if column in catalog.table.colnames:
            values = np.asarray(catalog.table[column], dtype=float)
            table.add_row(column, f"{values.min():.4f} .. {values.max():.4f} deg")
    return table


def run_summary_table(results: list[dict], thresholds: list[float], title: str = "suite summary") -> RichTable:
    """One row per variant: runs, test accuracy, and the Kaplan-Meier median epochs to each threshold."""
    table = RichTable(title=title, title_justify="left")
    table.add_column("variant", style="bold")
    table.add_column("runs", justify="right")
    table.add_column("test acc (mean ± sd)", justify="right")
    for threshold in thresholds:
        table.add_column(f"epochs to {threshold:g}\n(KM median, reached)", justify="right")
    variants = list(dict.fromkeys(r["variant"] for r in results))
    for variant in variants:
        runs = [r for r in results if r["variant"] == variant]
        accuracies = np.asarray([r["test_accuracy"] for r in runs if r["test_accuracy"] is not None], dtype=float)
        accuracy = f"{accuracies.mean():.3f} ± {accuracies.std(ddof=1) if accuracies.size > 1 else 0:.3f}" \
            if accuracies.size else "-"
        cells = []
        for threshold in thresholds:
            reached = sum(r["thresholds"][str(threshold)]["reached"] for r in runs)
            median = stats.cost_medians(runs, variant, threshold)["epochs"]
            cells.append(f"{_fmt(median)} ({reached}/{len(runs)})")
        table.add_row(variant, str(len(runs)), accuracy, *cells)
    return table


# --- suite reports ----------------------------------------------------------------------------------------

SIGNIFICANCE = 0.05
IMAGENET_NOTE = ("ImageNet pretraining is outside galbench's view, so its cost is not on this bill; for scale, "
                 "torchvision's AlexNet recipe trains 90 epochs of ImageNet-1k (about 115 million images seen).")


@dataclass
class SuiteReport:
    """What one run directory says, with its statistics: the input of every renderer."""

    path: Path
    name: str
    runs: list[dict]
    thresholds: list[float]
    baseline: str
    classes: list[str]
    environment: dict
    analysis: stats.Analysis
    costs: dict = field(default_factory=dict)  # (variant, threshold) -> KM medians per metric
    pretrain: dict = field(default_factory=dict)  # variant -> {"cost": ..., "shared_by": n}

    @property
    def main_threshold(self) -> float:
        """The highest threshold that the baseline reached in at least half of its runs, else the lowest."""
        for threshold in reversed(self.thresholds):
            km = self.costs[(self.baseline, threshold)]
            if km["epochs"] is not None and np.isfinite(km["epochs"]):
                return threshold
        return self.thresholds[0]


def load_report(run_dir: str | Path) -> SuiteReport:
    """Recompute a suite's results and statistics from a run directory's files (no retraining)."""
    from galbench.experiment.train import EventLog, results_from_events

    run_dir = Path(run_dir)
    suite_file = run_dir / "suite.resolved.json"
    if not suite_file.exists():
        raise GalbenchError("not a galbench run directory (no suite.resolved.json)", where=str(run_dir))
    suite = json.loads(suite_file.read_text())
    environment = json.loads((run_dir / "environment.json").read_text())
    thresholds = suite["suite"]["thresholds"]
    runs = []
    for log in sorted((run_dir / "runs").glob("*/events.jsonl")):
        events = EventLog(log).read()
        if not any(e["event"] == "run_start" for e in events):
            continue
        result = results_from_events(events, thresholds)
        retries = log.parent / "retries.json"
        result["retries"] = json.loads(retries.read_text())["retries"] if retries.exists() else 0
        if result["finished"]:
            runs.append(result)
    if not runs:
        raise GalbenchError("no finished runs to report", where=str(run_dir), fix="run the suite first")
    order = [v["name"] for v in suite["variant"]]
    runs.sort(key=lambda r: (order.index(r["variant"]) if r["variant"] in order else len(order), r["seed"]))
    baseline = suite["baseline"] if any(r["variant"] == suite["baseline"] for r in runs) else runs[0]["variant"]
    analysis = stats.analyse(runs, thresholds, baseline)
    costs = {(v, t): stats.cost_medians(runs, v, t) for v in analysis.variants for t in thresholds}
    pretrain = _pretraining_costs(run_dir)
    classes = json.loads((run_dir / "split.json").read_text())["classes"] if (run_dir / "split.json").exists() else []
    return SuiteReport(run_dir, suite["suite"]["name"], runs, thresholds, baseline, classes, environment, analysis,
                       costs, pretrain)


def _pretraining_costs(run_dir: Path) -> dict:
    """Each pretrained variant's pretraining cost and the number of runs that share it."""
    results_file = run_dir / "results.json"
    stored = json.loads(results_file.read_text())["runs"] if results_file.exists() else []
    found = {}
    for row in stored:
        if row.get("pretrain_cost"):
            found[row["variant"]] = {"cost": row["pretrain_cost"], "shared_by": row.get("pretrain_shared_by") or 1}
    return found


def _fmt(value, digits=2, scale=1.0, infinite="not reached") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and np.isinf(value):
        return infinite
    if isinstance(value, float) and np.isnan(value):
        return "-"
    return f"{value * scale:.{digits}f}"


def _fmt_cost(value, scale: float) -> str:
    """Costs span many orders of magnitude (a laptop to a GPU cluster): three significant figures."""
    return _fmt(value) if value is None or not np.isfinite(value) else f"{value * scale:.3g}"


def _fmt_p(p) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _marker(p) -> str:
    return "*" if p is not None and p < SIGNIFICANCE else ""


def _ratio_text(comparison: stats.ThresholdComparison) -> str:
    """Median ratio with its interval; where the baseline's median is never reached, say so instead of 0."""
    if np.isinf(comparison.baseline_km.median):
        return "baseline median not reached"
    low, high = comparison.ratio_ci
    return (f"{_fmt(comparison.median_ratio, infinite='inf')} [{_fmt(low, infinite='inf')}, "
            f"{_fmt(high, infinite='inf')}]")


def threshold_rows(report: SuiteReport, threshold: float) -> list[dict]:
    """The per-threshold table as plain rows (shared by the terminal, Markdown and HTML renderers)."""
    rows = []
    by_variant = {c.variant: c for c in report.analysis.time_to_threshold if c.threshold == threshold}
    for variant in report.analysis.variants:
        cost = report.costs[(variant, threshold)]
        reached = [r["thresholds"][str(threshold)]["reached"] for r in report.runs if r["variant"] == variant]
        comparison = by_variant.get(variant)
        pre = report.pretrain.get(variant)
        share = {k: (pre["cost"].get(k) or 0) / pre["shared_by"] for k in ("train_flops", "device_seconds")} \
            if pre else {"train_flops": 0, "device_seconds": 0}
        flops, seconds = cost["train_flops"], cost["device_seconds"]
        rows.append({
            "variant": variant, "reached": f"{sum(reached)}/{len(reached)}",
            "median_epochs": _fmt(cost["epochs"]),
            "device_hours": _fmt_cost(seconds, 1 / 3600),
            "device_hours_with_pretraining": _fmt_cost(None if seconds is None else seconds + share["device_seconds"],
                                                       1 / 3600) if pre else "",
            "pflops": _fmt_cost(flops, 1e-15),
            "pflops_with_pretraining": _fmt_cost(None if flops is None else flops + share["train_flops"], 1e-15)
            if pre else "",
            "ratio": "baseline" if comparison is None else _ratio_text(comparison),
            "p_improvement": "" if comparison is None or comparison.probability_of_improvement is None
            else f"{comparison.probability_of_improvement:.2f}",
            "logrank_p": "" if comparison is None else _fmt_p(comparison.logrank_p),
            "logrank_p_adjusted": "" if comparison is None else
            _fmt_p(comparison.logrank_p_adjusted) + _marker(comparison.logrank_p_adjusted),
        })
    return rows


THRESHOLD_COLUMNS = [("variant", "variant"), ("reached", "reached"), ("median_epochs", "median epochs (KM)"),
                     ("ratio", "ratio to baseline [95% CI]"), ("p_improvement", "P(faster)"),
                     ("device_hours", "device-hours"), ("device_hours_with_pretraining", "+ pretraining share"),
                     ("pflops", "PFLOPs"), ("pflops_with_pretraining", "+ pretraining share"),
                     ("logrank_p", "log-rank p"), ("logrank_p_adjusted", "p (Holm)")]


def accuracy_rows(report: SuiteReport, split: str = "test") -> list[dict]:
    """The final-accuracy table as plain rows."""
    rows = []
    for item in report.analysis.accuracy:
        if item.split != split:
            continue
        rows.append({
            "variant": item.variant, "n": str(item.n), "mean": f"{item.mean:.4f}", "iqm": f"{item.iqm:.4f}",
            "ci": f"[{item.ci[0]:.4f}, {item.ci[1]:.4f}]",
            "difference": "baseline" if item.difference is None else f"{item.difference:+.4f}",
            "hedges_g": "" if item.hedges_g is None else f"{item.hedges_g:+.2f}",
            "welch_p": "" if item.difference is None else _fmt_p(item.welch_p),
            "welch_p_adjusted": "" if item.difference is None else
            _fmt_p(item.welch_p_adjusted) + _marker(item.welch_p_adjusted),
            "mann_whitney_p_adjusted": "" if item.difference is None else
            _fmt_p(item.mann_whitney_p_adjusted) + _marker(item.mann_whitney_p_adjusted),
        })
    return rows


ACCURACY_COLUMNS = [("variant", "variant"), ("n", "n"), ("mean", "mean"), ("iqm", "IQM"), ("ci", "95% CI (mean)"),
                    ("difference", "vs baseline"), ("hedges_g", "Hedges g"), ("welch_p", "Welch p"),
                    ("welch_p_adjusted", "Welch p (Holm)"), ("mann_whitney_p_adjusted", "M-W p (Holm)")]


def verdicts(report: SuiteReport) -> list[str]:
    """One plain-language paragraph per comparison with the baseline."""
    threshold = report.main_threshold
    texts = []
    for comparison in (c for c in report.analysis.time_to_threshold if c.threshold == threshold):
        variant, base = comparison.variant, report.baseline
        accuracy = next(a for a in report.analysis.accuracy if a.variant == variant and a.split == "test")
        base_accuracy = next(a for a in report.analysis.accuracy if a.variant == base and a.split == "test")
        speed = (f"{variant} reached {threshold:g} validation accuracy in {comparison.km.n_reached} of "
                 f"{comparison.km.n} runs, median {_fmt(comparison.km.median)} epochs, against "
                 f"{comparison.baseline_km.n_reached} of {comparison.baseline_km.n} runs and "
                 f"{_fmt(comparison.baseline_km.median)} epochs for {base} (median ratio {_ratio_text(comparison)}; "
                 f"probability that a {variant} run is faster: {_fmt(comparison.probability_of_improvement)}).")
        if not comparison.assessed:
            judgement = f" With fewer than {stats.MIN_SEEDS} seeds per arm, significance is not assessed."
        elif comparison.logrank_p is None:
            judgement = " No run of either arm reached it, so there is no time to compare."
        else:
            p = comparison.logrank_p_adjusted
            judgement = (f" The difference in time to threshold is {'' if p < SIGNIFICANCE else 'not '}significant "
                         f"at the 5% level after Holm's correction (log-rank p = {_fmt_p(comparison.logrank_p)}, "
                         f"adjusted {_fmt_p(p)}).")
        accuracy_text = (f" Test accuracy: {accuracy.mean:.3f} against {base_accuracy.mean:.3f} "
                         f"({accuracy.difference:+.3f}")
        if accuracy.assessed:
            significant = accuracy.welch_p_adjusted is not None and accuracy.welch_p_adjusted < SIGNIFICANCE
            accuracy_text += (f", Welch p = {_fmt_p(accuracy.welch_p)}, adjusted {_fmt_p(accuracy.welch_p_adjusted)}: "
                              f"{'a significant' if significant else 'no significant'} difference).")
        else:
            accuracy_text += "; not assessed)."
        pre = report.pretrain.get(variant)
        cost_text = ""
        if pre:
            cost = pre["cost"]
            cost_text = (f" Its pretraining cost {cost['train_flops'] / 1e15:.3g} PFLOPs and "
                         f"{cost['device_seconds'] / 3600:.3g} device-hours, shared by {pre['shared_by']} runs.")
        elif comparison.variant and any(r["init"].startswith("imagenet") for r in report.runs if r["variant"] == variant):
            cost_text = " " + IMAGENET_NOTE
        texts.append(speed + judgement + accuracy_text + cost_text)
    return texts


def _rich_table(title: str, columns, rows) -> RichTable:
    table = RichTable(title=title, title_justify="left")
    for key, label in columns:
        if any(row[key] for row in rows):
            table.add_column(label, justify="left" if key == "variant" else "right")
    keys = [key for key, _ in columns if any(row[key] for row in rows)]
    for row in rows:
        table.add_row(*[row[key] for key in keys])
    return table


def terminal_report(report: SuiteReport) -> list:
    """Rich renderables: per-threshold tables, the accuracy table and the verdicts."""
    parts = []
    for threshold in report.thresholds:
        parts.append(_rich_table(f"time to validation accuracy {threshold:g} (baseline: {report.baseline}; "
                                 f"* = significant at 5% after Holm)", THRESHOLD_COLUMNS,
                                 threshold_rows(report, threshold)))
    parts.append(_rich_table("final test accuracy (best-validation checkpoint)", ACCURACY_COLUMNS,
                             accuracy_rows(report)))
    for text in verdicts(report):
        parts.append(text + "\n")
    retried = [f"{r['variant']} seed {r['seed']}: {r['retries']}" for r in report.runs if r.get("retries")]
    if retried:
        parts.append("runs retried after a worker failure: " + ", ".join(retried))
    env = report.environment
    parts.append(f"measured on {env.get('device_name')} ({env.get('device')}), torch {env.get('torch')}, "
                 f"precision {env.get('precision')}")
    return parts


def _markdown_table(columns, rows) -> str:
    keys = [(key, label) for key, label in columns if any(row[key] for row in rows)]
    lines = ["| " + " | ".join(label for _, label in keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(row[key] for key, _ in keys) + " |" for row in rows]
    return "\n".join(lines)


def figures(report: SuiteReport) -> dict[str, bytes]:
    """The report's plots as PNG bytes, by file name."""
    from galbench.analysis import plots

    images = {
        "learning_curves.png": plots.learning_curves(report.runs, "epochs", "epochs"),
        "accuracy_vs_flops.png": plots.learning_curves(report.runs, "train_flops", "cumulative training FLOPs",
                                                       title="accuracy against compute (fine-tuning only)"),
        "accuracy_vs_device_hours.png": plots.learning_curves(
            report.runs, "device_seconds", "cumulative device-hours", 1 / 3600,
            title="accuracy against device time (fine-tuning only)"),
        "time_to_threshold.png": plots.time_to_threshold_strip(report.runs, report.thresholds),
    }
    threshold = report.main_threshold
    curves = {}
    for variant in report.analysis.variants:
        rows = [r["thresholds"][str(threshold)] for r in report.runs if r["variant"] == variant]
        km = stats.kaplan_meier([row["epochs"] for row in rows], [row["reached"] for row in rows])
        curves[variant] = (list(km.times), list(km.survival), km.n)
    images["kaplan_meier.png"] = plots.kaplan_meier_curves(curves, threshold)
    winner = max(report.runs, key=lambda r: r["test_accuracy"])
    if report.classes and winner["confusion"]:
        images["confusion_winner.png"] = plots.confusion_plot(
            winner["confusion"], report.classes,
            f"winner: {winner['variant']} seed {winner['seed']}, test accuracy {winner['test_accuracy']:.3f}")
    return images


def markdown_report(report: SuiteReport, image_names: list[str]) -> str:
    """report.md: tables, verdicts and the plots (as files beside it)."""
    env = report.environment
    lines = [f"# galbench report: {report.name}", "",
             f"Run directory `{report.path}`; {len(report.runs)} finished runs; baseline `{report.baseline}`. "
             f"Measured on {env.get('device_name')} ({env.get('device')}), torch {env.get('torch')}, "
             f"precision {env.get('precision')}. Time-to-threshold medians are Kaplan-Meier estimates: runs that "
             f"never reached a threshold are censored, not dropped. `*` marks p < 0.05 after Holm's correction "
             f"across every test in this report.", ""]
    lines += ["## Verdicts", ""] + [text + "\n" for text in verdicts(report)]
    for threshold in report.thresholds:
        lines += [f"## Time to validation accuracy {threshold:g}", "",
                  _markdown_table(THRESHOLD_COLUMNS, threshold_rows(report, threshold)), ""]
    lines += ["## Final test accuracy", "", _markdown_table(ACCURACY_COLUMNS, accuracy_rows(report)), ""]
    if any(r["init"].startswith("imagenet") for r in report.runs):
        lines += [IMAGENET_NOTE, ""]
    retried = [f"{r['variant']} seed {r['seed']} ({r['retries']} {'retry' if r['retries'] == 1 else 'retries'})"
               for r in report.runs if r.get("retries")]
    if retried:
        lines += ["Runs retried after a worker failure (each resumed from its last checkpoint): "
                  + ", ".join(retried) + ".", ""]
    lines += ["## Plots", ""] + [f"![{name}]({name})\n" for name in image_names]
    return "\n".join(lines)


def html_report(markdown_text: str, images: dict[str, bytes], title: str) -> str:
    """A self-contained HTML page (images embedded) rendered from the Markdown report."""
    body = []
    in_table = False
    for line in markdown_text.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if not in_table:
                body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>")
                in_table = True
            elif not set("".join(cells)) <= set("-"):
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            name = line[line.index("(") + 1:line.index(")")]
            data = base64.b64encode(images[name]).decode()
            body.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>')
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            text = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(line))
            body.append(f"<p>{text}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}td,th{border:1px solid #ccc;"
             "padding:3px 7px;text-align:right}td:first-child,th:first-child{text-align:left}"
             "th{background:#f2f2f2}img{max-width:100%}figure{display:inline-block;margin:0.5em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def report_json(report: SuiteReport) -> dict:
    """Every figure of the report in machine-readable form."""
    def clean(value):
        if isinstance(value, float) and not np.isfinite(value):
            return None if np.isnan(value) else "inf"
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return clean({
        "suite": report.name, "baseline": report.baseline, "thresholds": report.thresholds,
        "main_threshold": report.main_threshold, "environment": report.environment,
        "time_to_threshold": [asdict(c) for c in report.analysis.time_to_threshold],
        "accuracy": [asdict(a) for a in report.analysis.accuracy],
        "cost_medians": [{"variant": v, "threshold": t, **m} for (v, t), m in report.costs.items()],
        "pretraining": report.pretrain, "verdicts": verdicts(report),
        "runs": [{k: r[k] for k in ("variant", "seed", "init", "test_accuracy", "best_val_accuracy", "totals",
                                    "thresholds")} for r in report.runs],
    })


def write_report(run_dir: str | Path) -> tuple[SuiteReport, list[Path]]:
    """Write report.md, report.html, report.json and the plot PNGs into the run directory."""
    from galbench.analysis.plots import save_png
    from galbench.fileio import write_json_atomic, write_text_atomic

    report = load_report(run_dir)
    images = figures(report)
    folder = report.path / "report"
    for name, png in images.items():
        save_png(png, folder / name)
    markdown_text = markdown_report(report, list(images))
    write_text_atomic(folder / "report.md", markdown_text)
    write_text_atomic(folder / "report.html", html_report(markdown_text, images, f"galbench: {report.name}"))
    write_json_atomic(folder / "report.json", report_json(report))
    return report, [folder / "report.md", folder / "report.html", folder / "report.json"]


ENVIRONMENT_KEYS = ("device_name", "device", "torch", "cuda", "precision", "galbench")


def compare_tables(a: SuiteReport, b: SuiteReport) -> tuple[list[str], RichTable]:
    """Two suites side by side per variant: test accuracy and median epochs per threshold, with differences."""
    warnings_ = [f"environments differ in {key}: {a.environment.get(key)!r} vs {b.environment.get(key)!r}"
                 for key in ENVIRONMENT_KEYS if a.environment.get(key) != b.environment.get(key)]
    table = RichTable(title=f"A = {a.path}\nB = {b.path}", title_justify="left")
    for label in ("variant", "n A/B", "test acc A", "test acc B", "B - A",
                  *[f"epochs to {t:g} A / B" for t in a.thresholds if t in b.thresholds]):
        table.add_column(label, justify="left" if label == "variant" else "right")
    shared = [t for t in a.thresholds if t in b.thresholds]
    for variant in a.analysis.variants:
        if variant not in b.analysis.variants:
            continue
        acc_a = next(x for x in a.analysis.accuracy if x.variant == variant and x.split == "test")
        acc_b = next(x for x in b.analysis.accuracy if x.variant == variant and x.split == "test")
        cells = [f"{_fmt(a.costs[(variant, t)]['epochs'])} / {_fmt(b.costs[(variant, t)]['epochs'])}" for t in shared]
        table.add_row(variant, f"{acc_a.n}/{acc_b.n}", f"{acc_a.mean:.4f}", f"{acc_b.mean:.4f}",
                      f"{acc_b.mean - acc_a.mean:+.4f}", *cells)
    return warnings_, table
