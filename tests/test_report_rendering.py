"""Report rendering from synthetic results rows and hand-made statistics: verdicts, open bounds, labels saved,
break-even, calibration, pretraining probes, sources of variance. No training: rows are generated here."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from galbench.analysis import report as R
from galbench.analysis import stats

CLASSES = ["elliptical", "spiral", "edge-on"]
THRESHOLDS = [0.5, 0.7]
TEST_LABELS = np.arange(300) % 3


def make_row(variant: str, seed: int, accuracy: float, size: int | None = None, epochs: int = 10,
             flops_per_epoch: float = 1e12, seconds_per_epoch: float = 2.0, **extra) -> dict:
    """A finished run's results row whose predictions score about `accuracy` on the shared test labels."""
    rng = np.random.default_rng(zlib.crc32(f"{variant}/{seed}/{size}".encode()))
    correct = rng.random(TEST_LABELS.size) < accuracy
    predictions = np.where(correct, TEST_LABELS, (TEST_LABELS + 1) % 3)
    confusion = np.bincount(TEST_LABELS * 3 + predictions, minlength=9).reshape(3, 3)
    recall = np.diag(confusion) / confusion.sum(1)
    curve = []
    for step in range(1, 2 * epochs + 1):
        e = step / 2
        curve.append({"epochs": e, "samples": int(1000 * e), "train_flops": flops_per_epoch * e,
                      "device_seconds": seconds_per_epoch * e, "val_accuracy": accuracy * min(1.0, e / (0.6 * epochs)),
                      "val_loss": 1.0})
    crossings = {}
    for t in THRESHOLDS:
        hit = next((p for p in curve if p["val_accuracy"] >= t), None)
        point = hit or curve[-1]
        crossings[str(t)] = {"reached": hit is not None, **{k: point[k] for k in ("epochs", "samples", "train_flops",
                                                                                  "device_seconds")},
                             "eval_flops": 0, "eval_device_seconds": 0.0, "wall_seconds": 0.0, "energy_joules": None}
    last = curve[-1]
    row = {"variant": variant, "seed": seed, "model": "alexnet-tiny", "init": "scratch", "finished": True,
           "final_val_accuracy": last["val_accuracy"], "best_val_accuracy": last["val_accuracy"],
           "test_accuracy": float(correct.mean()), "test_balanced_accuracy": float(recall.mean()),
           "confusion": confusion.tolist(), "precision": recall.tolist(), "recall": recall.tolist(),
           "totals": {"epochs": float(epochs), "samples": 1000 * epochs, "train_flops": last["train_flops"],
                      "eval_flops": 1e10 * epochs, "device_seconds": last["device_seconds"],
                      "eval_device_seconds": 0.1 * epochs, "wall_seconds": 0.0, "energy_joules": None},
           "thresholds": crossings, "curve": curve, "test_predictions": predictions.tolist(),
           "test_labels": TEST_LABELS.tolist(), "test_rows": list(range(TEST_LABELS.size)), "train_size": size}
    row.update(extra)
    return row


def make_suite(variants=("scratch", "fractal"), sizes=None, analysis=None, **suite_extra) -> dict:
    suite = {"suite": {"name": "synthetic", "seeds": list(range(5)), "thresholds": THRESHOLDS, **suite_extra},
             "data": {"synth": {"n": 2000, "seed": 0}, "split": {"train": 0.7, "val": 0.15, "test": 0.15, "seed": 0},
                      "image_size": 64, "crop": 1.0},
             "train": {"epochs": 10, "lr": 0.001},
             "variant": [{"name": v, "model": "alexnet-tiny", "init": "scratch" if v == "scratch" else "fractal",
                          "finetune": "all", "fractal": None, "train": {}} for v in variants],
             "pretrained": [], "baseline": "scratch"}
    if sizes:
        suite["suite"]["train_sizes"] = sizes
    if analysis:
        suite["analysis"] = analysis
    return suite


def build(rows, suite=None, exports=None) -> R.SuiteReport:
    split = {"classes": CLASSES, "train": list(range(1400)), "val": list(range(300)), "test": list(range(300))}
    return R.build_report(Path("/nonexistent/run"), suite or make_suite(), rows, environment={"device": "cpu"},
                          split=split, exports=exports)


def html_of(report: R.SuiteReport) -> str:
    return R.html_report(report, R.figures(report))


# --- verdicts from hand-made statistics ----------------------------------------------------------------------

ACCURACY = stats.Endpoint("test_accuracy", "accuracy", "test_accuracy")


def hand_report(*comparisons: stats.Comparison, settings=None) -> R.SuiteReport:
    """A report around hand-made comparisons (real rows underneath for the facts)."""
    report = build([make_row(v, s, 0.6) for v in ("scratch", "fractal") for s in range(3)])
    report.analysis.settings = settings or stats.Settings(ACCURACY, declared=False)
    report.analysis.confirmatory = list(comparisons)
    report.analysis.exploratory = []
    return report


def accuracy_comparison(**changes) -> stats.Comparison:
    values = dict(variant="fractal", baseline="scratch", endpoint=ACCURACY, train_size=None, confirmatory=True, n=5,
                  baseline_n=5, estimate=stats.Bound(0.004), ci=(stats.Bound(-0.010), stats.Bound(0.018)),
                  ci_method="two-level bootstrap",
                  test=stats.HypothesisTest("permutation mean difference", 0.004, 0.57, 2 / 252, True, 252),
                  p_adjusted=0.57, detected=False, mde=0.021)
    values.update(changes)
    return stats.Comparison(**values)


def test_a_null_result_says_what_would_have_been_detected():
    report = hand_report(accuracy_comparison())
    (text,) = R.headline(report)
    assert text == ("fractal against scratch on test accuracy: no difference detected (+0.004 [-0.010, +0.018], "
                    "permutation p = 0.57, Holm-adjusted 0.57); a difference of ±0.021 or more would have been detected 80% of "
                    "the time.")
    assert "did not raise" not in html_of(report)


def test_a_detected_difference_names_its_direction_and_adjusted_p():
    report = hand_report(accuracy_comparison(estimate=stats.Bound(-0.031), ci=(stats.Bound(-0.05), stats.Bound(-0.012)),
                                             p_adjusted=0.0158, detected=True))
    (text,) = R.headline(report)
    assert text.startswith("fractal scored lower than scratch on test accuracy: -0.031 [-0.050, -0.012]")
    assert "Holm-adjusted 0.016" in text


def test_a_design_that_cannot_reach_alpha_says_so_instead_of_an_mde():
    note = "with 3 and 3 runs the smallest reachable p is 0.1, not below 0.05: no difference of any size can be detected"
    test = stats.HypothesisTest("permutation mean difference", 0.01, 0.4, 0.1, True, 20)
    report = hand_report(accuracy_comparison(test=test, n=3, baseline_n=3, mde=None, mde_note=note))
    (text,) = R.headline(report)
    assert note in text and "would have been detected" not in text


def test_equivalence_is_stated_where_a_margin_is_set():
    eq = stats.Equivalence(0.02, 0.012, True, (-0.008, 0.016))
    report = hand_report(accuracy_comparison(equivalence=eq))
    assert "equivalent within ±0.02 (TOST p = 0.012)" in R.headline(report)[0]
    not_shown = hand_report(accuracy_comparison(equivalence=stats.Equivalence(0.02, 0.2, False, (-0.03, 0.04))))
    assert "equivalence within ±0.02 not shown (TOST p = 0.20)" in R.headline(not_shown)[0]


def test_time_verdicts_write_open_bounds_as_a_person_would():
    endpoint = stats.Endpoint("epochs_to:0.8", "time", "epochs", 0.8)
    km = stats.KaplanMeier(5, 2, stats.Bound(12.0, "at_least"), 0.4)
    base_km = stats.KaplanMeier(5, 5, stats.Bound(7.5), 1.0)
    test = stats.HypothesisTest("permutation log-rank", 1.2, 0.31, 2 / 252, True, 252)
    comparison = stats.Comparison("fractal", "scratch", endpoint, None, True, 5, 5, stats.Bound(0.47),
                                  (stats.Bound(0.28), stats.Bound(2.4, "at_least")), "bootstrap", test,
                                  p_adjusted=0.31, km=km, baseline_km=base_km, probability_of_improvement=0.4)
    settings = stats.Settings(endpoint, declared=True)
    text = R.verdict(hand_report(comparison, settings=settings), comparison)
    assert "fractal reached 0.8 in 2 of 5 runs (its median was not reached)" in text
    assert "scratch in 5 of 5 runs (median 7.5 epochs)" in text
    assert "ratio of medians 0.47 [0.28, > 2.4]" in text and "no difference detected" in text
    assert "inf" not in text and "nan" not in text
    neither = stats.Comparison("fractal", "scratch", endpoint, None, True, 5, 5,
                               stats.Bound(None, "unknown", "not reached in either arm"),
                               (stats.Bound(None, "unknown"), stats.Bound(None, "unknown")), "bootstrap", None,
                               km=stats.KaplanMeier(5, 0, stats.Bound(12.0, "at_least"), 0.0), baseline_km=km)
    text = R.verdict(hand_report(neither, settings=settings), neither)
    assert "no ratio of medians (not reached in either arm)" in text and "nothing to test" in text


def test_numbers_are_never_printed_as_zero_inf_or_nan():
    assert [R.fmt_p(p) for p in (0.57, 0.1, 0.0079, 0.05, 1e-5)] == ["0.57", "0.10", "0.0079", "0.05", "1.0e-05"]
    assert R.fmt_bound(stats.Bound(2.4, "at_least"), R._ratio) == "> 2.4"
    assert R.fmt_bound(stats.Bound(0.5, "at_most"), R._ratio) == "< 0.5"
    assert R.fmt_interval((stats.Bound(None, "unknown"), stats.Bound(None, "unknown")), R._ratio) == ""
    assert R.flops_unit([3e14, 2e15]).label == "PFLOPs" and R.flops_unit([4e9]).label == "GFLOPs"
    assert R.seconds_unit([30.0]).label == "device-seconds" and R.seconds_unit([900.0]).label == "device-minutes"
    assert [R.flops_unit([4e9])(v) for v in (4.5e9, 3e12, 1.234e11)] == ["4.5", "3,000", "123"]


# --- rendered from synthetic runs through stats.analyse ----------------------------------------------------

def label_rows():
    accuracy = {"scratch": {100: 0.45, 300: 0.60, 1000: 0.72}, "fractal": {100: 0.62, 300: 0.78, 1000: 0.86}}
    return [make_row(v, s, accuracy[v][n], size=n) for v in accuracy for n in (100, 300, 1000) for s in range(5)]


def test_label_efficiency_curve_labels_saved_and_per_size_tables():
    report = build(label_rows(), make_suite(sizes=[100, 300, 1000]))
    saved = {e.train_size: e for e in report.analysis.labels_saved if e.variant == "fractal"}
    assert set(saved) == {100, 300, 1000}
    text = " ".join(R.labels_sentences(report))
    first = saved[100].baseline_labels
    low, high = (f"{b.value:,.0f}" for b in saved[100].ci)
    assert first.side == "exact" and (f"With 100 labels, fractal matched scratch's test accuracy at {first.value:,.0f} "
                                      f"labels (95% CI {low} to {high})") in text
    table = R.labels_saved_table(report)
    assert any(row["needed"] == "more than all" for row in table.rows)  # scratch never reaches fractal at 1,000
    assert saved[1000].baseline_labels.side == "at_least"
    found = R.figures(report)
    assert found[0].name == "label_efficiency" and "fractal:" in found[0].alt and "at 1,000" in found[0].alt
    body, _ = R.sections(report, found)
    time = next(s for s in body if s.id == "time")
    assert len(time.tables) == 3 * len(THRESHOLDS)
    assert {t.title.split(", ")[1].split(" (")[0] for t in time.tables} == {"100 labels", "300 labels", "1,000 labels"}
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", found[0].svg)
    assert texts[:3] == ["100", "300", "1,000"]  # the log axis labelled at the sizes run, in plain numbers


def test_label_efficiency_figure_plots_the_declared_primary_endpoint_with_its_own_chance_level():
    report = build(label_rows(), make_suite(sizes=[100, 300, 1000], analysis={"primary": "test_balanced_accuracy"}))
    figure = R.figures(report)[0]
    assert figure.name == "label_efficiency" and figure.alt.startswith("Balanced test accuracy against labelled")
    for arm in report.analysis.arms:
        assert f"{arm.variant}: " in figure.alt
        assert f"{arm.accuracy['test_balanced_accuracy'].mean:.3f} at {arm.train_size:,}" in figure.alt
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", figure.svg)
    assert "balanced test accuracy" in texts
    assert "chance 0.33" in texts  # any single class always guessed scores 1/3 balanced accuracy
    headline = R.figures(build([make_row(v, s, 0.7) for v in ("scratch", "fractal") for s in range(5)],
                               make_suite(analysis={"primary": "test_balanced_accuracy"})))[0]
    assert headline.name == "headline" and "chance level (one class always guessed) 0.333" in headline.alt


def test_break_even_is_said_in_words_with_the_full_pretraining():
    pretrain = {"train_flops": 12e12, "device_seconds": 30.0}
    rows = [make_row("scratch", s, 0.7) for s in range(5)]
    rows += [make_row("fractal", s, 0.7, epochs=6, pretrain_cost=pretrain, pretrain_id="fractal-0") for s in range(5)]
    rows += [make_row("costly", s, 0.7, epochs=12, pretrain_cost=pretrain, pretrain_id="fractal-0") for s in range(5)]
    report = build(rows, make_suite(variants=("scratch", "fractal", "costly")))
    sentences = R.cost_sentences(report)
    assert sentences[0] == ("fractal pays back its pretraining (12 TFLOPs, counted in full) after 3 fine-tunes (6 "
                            "TFLOPs per fine-tune (full training) against 10 TFLOPs for scratch).")
    assert sentences[1].startswith("costly never pays back its pretraining (12 TFLOPs, counted in full)")
    table = R.cost_table(report, "train_flops", None)
    fractal = next(r for r in table.rows if r["variant"] == "fractal")
    assert (fractal["pretraining"], fractal["one_model"], fractal["break_even"]) == ("12", "18", "3 fine-tunes")
    assert "full training" in table.title and "TFLOPs" in table.title
    offsets = next(f for f in R.figures(report) if f.name == "accuracy_vs_train_flops")
    assert "fractal starts after its pretraining (12.00 TFLOP)" in offsets.alt
    ticks = [t for t in re.findall(r"<text[^>]*>([^<]*)</text>", offsets.svg) if t.endswith("FLOP")]
    assert {"1 TFLOP", "2 TFLOP", "5 TFLOP", "10 TFLOP"} <= set(ticks)  # 1-2-5 ticks in engineering units


def test_calibration_from_exports_json_gets_a_table_and_reliability_diagrams():
    # as galbench.inference.calibrate writes it: empty bins have no confidence or accuracy
    bins = {"confidence": [None, 0.4, 0.6, 0.8, 0.95], "accuracy": [None, 0.35, 0.5, 0.7, 0.8],
            "count": [0, 10, 20, 30, 40]}
    calibration = {"temperature": 1.7, "ece_before": 0.091, "ece_after": 0.023, "bins": 5,
                   "reliability_before": bins, "reliability_after": {**bins, "accuracy": [None, 0.4, 0.6, 0.8, 0.93]}}
    exports = {"scratch": {"variant": "scratch", "seed": 1, "meta": {"calibration": json.dumps(calibration)}},
               "fractal": {"variant": "fractal", "seed": 0, "meta": {"calibration": json.dumps(calibration)}},
               "winner": {"variant": "fractal", "seed": 0, "meta": {"calibration": json.dumps(calibration)}}}
    rows = [make_row(v, s, 0.7) for v in ("scratch", "fractal") for s in range(3)]
    report = build(rows, exports=exports)
    table = R.calibration_table(report)
    assert [r["variant"] for r in table.rows] == ["scratch", "fractal"]
    assert table.rows[0]["before"] == "0.0910" and table.rows[0]["after"] == "0.0230"
    html = html_of(report)
    assert 'id="calibration"' in html and 'id="figure-reliability"' in html and "ECE 0.091 before" in html
    plain = build(rows, exports={"scratch": {"variant": "scratch", "seed": 1}})
    assert R.calibration_table(plain) is None and 'id="calibration"' not in html_of(plain)


def test_pretraining_probe_curves_are_plotted_where_present():
    curve = [{"epoch": 1.0, "knn_accuracy": 0.41, "linear_probe_accuracy": 0.45},
             {"epoch": 5.0, "knn_accuracy": 0.58, "linear_probe_accuracy": 0.63}]
    rows = [make_row("scratch", s, 0.7) for s in range(3)]
    rows += [make_row("fractal", s, 0.7, pretrain_meta={"probe_curve": curve}) for s in range(3)]
    found = R.figures(build(rows))
    probe = next(f for f in found if f.name == "probe_curves")
    assert "fractal: linear probe 0.450 to 0.630, k-NN 0.410 to 0.580 over 5 epochs" in probe.alt
    assert "probe_curves" not in [f.name for f in R.figures(build(rows[:3] + [make_row("fractal", 0, 0.7)]))]


def test_sources_of_variance_covered_and_not_covered():
    rows = [make_row(v, s, 0.7) for v in ("scratch", "fractal") for s in range(3)]
    plain = R.variance_sources(build(rows))
    assert "seeds (initialisation and data order): covered" in plain
    assert "splits: not covered" in plain and "pretraining of fractal: not covered" in plain
    suite = make_suite()
    suite["data"]["split"]["per_seed"] = True
    suite["variant"][1]["fractal"] = {"replicates": 3}
    covered = R.variance_sources(build(rows, suite))
    assert "splits: covered" in covered and "pretraining of fractal: covered, 3 independent pretrainings" in covered


def test_design_states_each_arms_budget_and_what_varies_without_reprs():
    suite = make_suite()
    suite["train"] = {"epochs": None, "steps": None, "lr": 0.001}
    suite["variant"][1]["train"] = {"steps": 500}
    facts = dict(R.design_facts(build([make_row(v, s, 0.6) for v in ("scratch", "fractal") for s in range(3)], suite)))
    assert facts["training budget"] == "10 epochs; 500 optimizer steps (by arm)"  # scratch: as its runs trained
    assert facts["what varies between arms"] == "init (scratch / fractal), train.steps (default / 500)"
    assert "None" not in " ".join(facts.values())


def test_shared_gpu_runs_and_threshold_metric_are_named():
    rows = [make_row("scratch", s, 0.7, shared_gpu=s == 1) for s in range(3)]
    rows += [make_row("fractal", s, 0.7) for s in range(3)]
    report = build(rows, make_suite(threshold_metric="balanced_accuracy"))
    notes = " ".join(R.cost_notes(report))
    assert "shared a GPU" in notes and "scratch seed 1" in notes and "scratch seed 0" not in notes
    assert next(r for r in R.runs_table(report).rows if r["run"] == "scratch seed 1")["flags"] == "shared GPU"
    assert R.threshold_table(report, 0.5, None).title.startswith("time to 0.5 validation balanced accuracy")


def test_a_declared_time_endpoint_leads_the_report():
    rows = [make_row("scratch", s, 0.8, epochs=10) for s in range(5)]
    rows += [make_row("fractal", s, 0.8, epochs=5) for s in range(5)]
    report = build(rows, make_suite(analysis={"primary": "epochs_to:0.7", "alpha": 0.05}))
    assert "Primary endpoint: epochs to 0.7 validation accuracy (declared in the suite)" in R.primary_sentence(report)
    (text,) = R.headline(report)
    assert text.startswith("fractal reached 0.7 in 5 of 5 runs (median ")
    assert R.figures(report)[0].name == "kaplan_meier"
    (row,) = R.confirmatory_table(report).rows
    assert row["p_holm"] and row["result"] in ("detected", "not detected")
    assert "to 0.7" in R.cost_table(report, "train_flops", None).title


def test_a_flops_endpoint_is_said_in_flops_units():
    rows = [make_row("scratch", s, 0.8, epochs=10) for s in range(5)]
    rows += [make_row("fractal", s, 0.8, epochs=5) for s in range(5)]
    report = build(rows, make_suite(analysis={"primary": "flops_to:0.7"}))
    (text,) = R.headline(report)
    assert "fractal reached 0.7 in 5 of 5 runs (median 3 TFLOPs), scratch in 5 of 5 runs (median 5.5 TFLOPs)" in text
    assert "e+" not in text
    km = R.figures(report)[0]
    assert km.name == "kaplan_meier" and "median 3 TFLOPs" in km.alt and "TFLOP" in km.svg


def test_tost_column_where_the_suite_sets_a_margin():
    rows = [make_row(v, s, 0.7) for v in ("scratch", "fractal") for s in range(5)]
    report = build(rows, make_suite(analysis={"equivalence": 0.05}))
    row = next(r for r in R.accuracy_table(report, None).rows if r["variant"] == "fractal")
    assert row["tost"].startswith(("yes (±0.05", "no (±0.05"))
    assert "equivalen" in R.headline(report)[0]
    assert row["balanced"] and row["mde"].startswith("±")


def test_one_run_against_one_run_is_mcnemar_on_the_shared_test_images():
    report = build([make_row("scratch", 0, 0.6), make_row("fractal", 0, 0.7)])
    (comparison,) = report.analysis.confirmatory
    assert comparison.test.name == "McNemar exact"
    assert f"McNemar exact p = {R.fmt_p(comparison.test.p_value)}" in R.headline(report)[0]
    row = next(r for r in R.accuracy_table(report, None).rows if r["variant"] == "fractal")
    assert row["test_name"] == "McNemar exact" and row["se"].startswith("n/a / 0.0")  # no seed part with one run
    assert row["val"] == "0.700 (one run)"


def test_a_baseline_alone_reports_without_comparisons():
    report = build([make_row("scratch", s, 0.6) for s in range(3)], make_suite(variants=("scratch",)))
    assert R.headline(report) == ["Only scratch has finished runs, so there is nothing to compare it with yet."]
    assert R.confirmatory_table(report).rows == [] and 'id="answer"' in html_of(report)


def test_damaged_event_logs_are_named_in_words(tmp_path):
    cases = {"binary": b"\xff\xfe\x00garbage\n", "no-start": b'{"event": "eval", "epochs": 1}\n',
             "malformed": b'{"event": "run_start"}\n{"event": "eval"}\n'}
    details = {}
    for name, content in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "events.jsonl").write_bytes(content)
        record, row = R.read_run(tmp_path / name, THRESHOLDS)
        assert record.status == "unreadable" and row is None
        details[name] = record.detail
    assert details == {"binary": "event log is not UTF-8 text", "no-start": "no run_start event",
                       "malformed": "malformed events (fields missing or of the wrong type)"}
    start = json.dumps({"event": "run_start", "variant": "scratch", "seed": 0, "model": "m", "init": "scratch"})
    (tmp_path / "middle").mkdir()
    (tmp_path / "middle" / "events.jsonl").write_text(f'{start}\n{{"event": "ev\n{{"event": "eval"}}\n')
    record, row = R.read_run(tmp_path / "middle", THRESHOLDS)
    assert (record.status, record.detail) == ("unfinished", "no evaluation yet; event log damaged at line 2 of 3, "
                                                            "read up to there")
    assert row["variant"] == "scratch" and not row["finished"]


def test_run_summary_lists_what_ran_without_statistics():
    from rich.console import Console

    rows = [make_row("scratch", s, 0.6) for s in range(3)] + [{**make_row("fractal", 0, 0.7), "finished": False}]
    console = Console(width=100, record=True)
    console.print(R.run_summary_table(rows, THRESHOLDS, title="synthetic"))
    text = console.export_text()
    assert "scratch" in text and "3/3" in text and "0/1" in text and max(map(len, text.splitlines())) <= 100


@pytest.mark.parametrize("size", [None, 300])
def test_markdown_and_html_carry_the_same_rows(size):
    rows = [make_row(v, s, 0.7, size=size) for v in ("scratch", "fractal") for s in range(3)]
    report = build(rows)
    found = R.figures(report)
    markdown, html = R.markdown_report(report, found), R.html_report(report, found)
    accuracy = next(s for s in R.sections(report, found)[0] if s.id == "accuracy")
    assert all(c.key != "balanced_mean" for c in accuracy.tables[0].shown())  # the terminal's short column
    for table in accuracy.tables:
        for row in table.rows:
            for value in (row.get(column.key) for column in table.shown()):
                if value:
                    assert value.replace("|", "\\|") in markdown and value in html.replace("&#39;", "'"), value


def test_terminal_tables_fit_100_columns_with_long_arm_names_and_pretraining():
    from rich.console import Console

    pretrain = {"train_flops": 2.5e14, "device_seconds": 300.0}
    rows = [make_row("scratch", s, 0.6 + 0.02 * s, epochs=12) for s in range(5)]
    for name, accuracy in (("fractal-pretrained", 0.66), ("simulation-pretrained", 0.5)):
        rows += [make_row(name, s, accuracy + 0.02 * s, epochs=12, flops_per_epoch=8e11, pretrain_cost=pretrain,
                          pretrain_id=name) for s in range(5)]
    suite = make_suite(variants=("scratch", "fractal-pretrained", "simulation-pretrained"),
                       analysis={"equivalence": 0.02})
    report = build(rows, suite)
    console = Console(width=100, record=True)
    for part in R.terminal_report(report):
        console.print(part, soft_wrap=False)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100 and "…" not in text
    table_lines = [line for line in text.splitlines() if line.startswith(" simulation")]
    assert len(table_lines) >= 5 and all(line.startswith(" simulation-pretrained ") for line in table_lines)
    for row in R.accuracy_table(report, None).rows:  # intervals printed whole
        assert row["test"] in text and (not row.get("difference") or row["difference"] in text)
    cost = R.cost_table(report, "train_flops", None)
    assert "pays back after" in text and all(row.get("break_even", "") in text for row in cost.rows)


def test_the_winner_is_the_exported_run_and_ties_follow_exports_json():
    rows = [make_row("scratch", s, 0.7) for s in range(3)] + [make_row("fractal", s, 0.7) for s in range(3)]
    assert len({r["best_val_accuracy"] for r in rows}) == 1  # every run ties on validation
    first = build(rows)
    assert (R.winner(first)["variant"], R.winner(first)["seed"]) == ("scratch", 0)  # no exports.json: first in order
    exports = {"winner": {"variant": "fractal", "seed": 2}, "fractal": {"variant": "fractal", "seed": 2},
               "scratch": {"variant": "scratch", "seed": 1}}
    report = build(rows, exports=exports)
    assert (R.winner(report)["variant"], R.winner(report)["seed"]) == ("fractal", 2)
    assert [row["run"] for row in R.recall_table(report).rows] == ["seed 1", "seed 2"]
    confusion = next(f for f in R.figures(report) if f.name == "confusion_winner")
    assert "fractal seed 2" in confusion.alt


def test_per_seed_splits_and_the_whole_training_split_as_a_size():
    rows = [make_row(v, s, 0.6 + 0.1 * (n == 1400), size=n, train_size_label="all" if n == 1400 else str(n))
            for v in ("scratch", "fractal") for n in (200, 1400) for s in range(3)]
    seeds = {str(s): {"seed": s, "train": list(range(1400)), "val": list(range(300)), "test": list(range(300))}
             for s in range(3)}
    suite = make_suite(sizes=[200, "all"])
    suite["data"]["split"]["per_seed"] = True
    report = R.build_report(Path("/nonexistent"), suite, rows, split={"classes": CLASSES, "per_seed": True,
                                                                      "seeds": seeds})
    facts = dict(R.dataset_facts(report))
    assert facts["split"].startswith("train 1,400 / validation 300 / test 300") and "each seed its own" in facts["split"]
    assert facts["labelled training sizes"].startswith("200 labels, all 1,400 labels")
    assert "all 1,400 labels" in R.accuracy_table(report, 1400).title


def test_one_training_set_size_is_not_named_everywhere():
    """New runs always record train_size; with one size the report does not repeat it on every line."""
    report = build([make_row(v, s, 0.6, size=1400) for v in ("scratch", "fractal") for s in range(3)])
    assert not report.multi_size
    assert "size" not in [c.key for c in R.confirmatory_table(report).shown()]
    assert "labels" not in R.headline(report)[0] and "labels" not in R.threshold_table(report, 0.5, 1400).title
    assert "labelled training sizes" not in dict(R.dataset_facts(report))


def test_markdown_without_figures_still_has_every_section():
    rows = [make_row(v, s, 0.6, retries=1 if s == 0 else 0) for v in ("scratch", "fractal") for s in range(3)]
    markdown = R.markdown_report(build(rows), [])
    assert "## The answer" in markdown and "## Cost" in markdown and "![" not in markdown
    assert "retried after a worker failure" in markdown and "scratch seed 0 (1)" in markdown
