"""Reports from real run directories: files written, numbers from stats, runs counted, HTML that renders."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from galbench.analysis import report as R
from galbench.analysis import stats
from galbench.analysis.report import load_report
from galbench.cli import main
from tests.conftest import write_suite

OLD_RUN_DIR = Path(__file__).parent / "data" / "run-dir-v0.2"


@pytest.fixture(scope="module")
def reported(finished_suite):
    """`galbench report` run once on the finished suite: (exit code, stdout, stderr, report.json)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["report", str(finished_suite)])
    report = json.loads((finished_suite / "report" / "report.json").read_text()) if code == 0 else None
    return code, out.getvalue(), err.getvalue(), report


def test_report_writes_markdown_html_json_and_svg_figures(reported, finished_suite):
    code, out, err, report = reported
    assert code == 0, err
    folder = finished_suite / "report"
    figures = sorted(p.stem for p in folder.glob("*.svg"))
    assert {"headline", "learning_curves", "kaplan_meier", "accuracy_vs_train_flops", "accuracy_vs_device_seconds",
            "time_to_threshold", "confusion_winner"} <= set(figures)
    for name in ("report.md", "report.html", "report.json", *[f"{f}.svg" for f in figures]):
        assert (folder / name).stat().st_size > 0, name
    html = (folder / "report.html").read_text()
    assert '<html lang="en">' in html and html.count("data:image/svg+xml;base64,") == len(figures)
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # opens offline
    alts = re.findall(r'<img src="[^"]+" alt="([^"]*)"', html)
    assert len(alts) == len(figures) and all(len(alt) > 40 for alt in alts)
    assert '<th scope="col">' in html and '<th scope="row">' in html
    assert report["headline"][0] in out.replace("\n", " ") or report["headline"][0][:60] in out.replace("\n", " ")
    assert "wrote " in err and str(folder / "report.html") in err and "wrote" not in out
    markdown = (folder / "report.md").read_text()
    assert markdown.index("## The answer") < markdown.index("## Dataset") < markdown.index("## Accuracy")
    for svg in figures:
        assert f"({svg}.svg)" in markdown


def test_report_json_goes_to_stdout_for_scripting(cli, finished_suite):
    code, out, err = cli("report", finished_suite, "--json")
    assert code == 0, err
    printed = json.loads(out)
    assert printed == json.loads((finished_suite / "report" / "report.json").read_text())
    assert "wrote" in err
    # no Python reprs, no non-JSON numbers
    assert not re.search(r"\b(NaN|Infinity|None|True|False)\b|'[a-z_]+':", out)


def test_report_numbers_are_the_statistics_of_the_runs(reported, finished_suite):
    """report.json quotes exactly what stats computes from the same results rows (nothing recomputed here)."""
    report = reported[3]
    runs = load_report(finished_suite).runs
    by_arm = {v: [r for r in runs if r["variant"] == v] for v in ("scratch", "faster")}
    (primary,) = report["confirmatory"]
    assert primary["endpoint"]["text"] == "test_accuracy" and report["settings"]["declared"] is False
    expected = stats.permutation_mean_difference([r["test_accuracy"] for r in by_arm["faster"]],
                                                 [r["test_accuracy"] for r in by_arm["scratch"]])
    assert primary["test"]["p_value"] == pytest.approx(expected.p_value)
    assert primary["p_adjusted"] == pytest.approx(expected.p_value)  # a family of one
    for item in report["exploratory"]:
        if item["endpoint"]["kind"] != "time" or item["endpoint"]["field"] != "epochs":
            continue
        key = str(item["endpoint"]["threshold"])
        arms = [([r["thresholds"][key]["epochs"] for r in by_arm[v]], [r["thresholds"][key]["reached"]
                                                                         for r in by_arm[v]]) for v in ("faster", "scratch")]
        test = stats.permutation_logrank(*arms[0], *arms[1])
        assert (item["test"] is None) == (test is None)
        if test is not None:
            assert item["test"]["p_value"] == pytest.approx(test.p_value)
            assert item["test"]["p_value"] >= item["test"]["p_floor"] >= 0.1 - 1e-12  # 3 vs 3: exact floor 0.1


def test_winner_is_chosen_on_validation_as_the_export_is(reported, finished_suite):
    report = reported[3]
    exported = json.loads((finished_suite / "export" / "exports.json").read_text())["winner"]
    assert (report["winner"]["variant"], report["winner"]["seed"]) == (exported["variant"], exported["seed"])
    best = max(report["runs"], key=lambda r: r["best_val_accuracy"])
    assert report["winner"]["test_accuracy"] == best["test_accuracy"]
    svg = (finished_suite / "report" / "confusion_winner.svg").read_text()
    assert f"{best['variant']} seed {best['seed']}" in svg and f"{best['test_accuracy']:.3f}" in svg


def test_report_is_recomputed_from_event_logs_not_results_json(finished_suite, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished_suite, copy)
    (copy / "results.json").write_text(json.dumps({"runs": []}))
    report = load_report(copy)
    assert len(report.runs) == 6 and {r["variant"] for r in report.runs} == {"scratch", "faster"}


def test_pretraining_cost_recorded_only_in_results_json_is_on_the_bill(finished_suite, tmp_path):
    copy = tmp_path / "pretrained"
    shutil.copytree(finished_suite, copy, ignore=shutil.ignore_patterns("report"))
    for log in copy.glob("runs/*/events.jsonl"):  # as galbench 0.2.0 wrote them: no cost in the event log
        events = [json.loads(line) for line in log.read_text().splitlines()]
        log.write_text("".join(json.dumps({k: v for k, v in e.items() if k != "pretrain_cost"}) + "\n"
                               for e in events))
    stored = json.loads((copy / "results.json").read_text())
    for row in stored["runs"]:
        row["test_accuracy"] = -1.0  # never used: the event log says it
        if row["variant"] == "faster":
            row["pretrain_cost"] = {"train_flops": 3e12, "device_seconds": 40.0}
    (copy / "results.json").write_text(json.dumps(stored))
    report = load_report(copy)
    assert all(r["test_accuracy"] >= 0 for r in report.runs)
    costs = {(c.variant, c.metric): c for c in report.analysis.costs}
    assert costs[("faster", "train_flops")].pretraining == 3e12 and costs[("scratch", "train_flops")].pretraining is None
    size = report.runs[0]["train_size"]  # every run trains on the whole split here
    row = next(r for r in R.cost_table(report, "train_flops", size).rows if r["variant"] == "faster")
    assert row["pretraining"] == "3,000" and row["break_even"] == "never"  # GFLOPs; fine-tuning costs as scratch


def test_unfinished_and_unreadable_runs_are_counted_never_dropped(cli, finished_suite, tmp_path):
    copy = tmp_path / "damaged"
    shutil.copytree(finished_suite, copy, ignore=shutil.ignore_patterns("report"))
    log = copy / "runs" / "faster__seed2" / "events.jsonl"
    lines = log.read_text().splitlines()
    stop = next(i for i, line in enumerate(lines) if '"run_stop"' in line)
    log.write_text("\n".join(lines[:stop - 2]) + "\n" + lines[stop - 2][: len(lines[stop - 2]) // 2])  # cut mid-line
    (copy / "runs" / "scratch__seed1" / "events.jsonl").write_text('{"event": "run_st')
    (copy / "runs" / "scratch__seed9").mkdir()
    code, out, err = cli("report", copy)
    assert code == 0, err
    assert "1 unfinished: faster__seed2" in " ".join(out.split()) and "cut mid-line" in out
    assert "2 unreadable" in out and "scratch__seed1" in out and "scratch__seed9 (no event log)" in out
    assert "warning:" in err and "unfinished" in err
    report = json.loads((copy / "report" / "report.json").read_text())
    found = report["runs_found"]
    assert (found["finished"], found["unfinished"], found["unreadable"], found["complete"]) == (4, 1, 2, False)
    assert len(report["runs"]) == 4
    html = (copy / "report" / "report.html").read_text()
    assert "faster__seed2" in html and 'class="status incomplete"' in html


def test_no_finished_run_is_one_line_and_exit_2(cli, finished_suite, tmp_path):
    copy = tmp_path / "empty"
    shutil.copytree(finished_suite, copy, ignore=shutil.ignore_patterns("report", "runs"))
    (copy / "runs" / "scratch__seed0").mkdir(parents=True)
    code, out, err = cli("report", copy)
    assert code == 2 and "no finished runs to report (1 unreadable)" in err and "Traceback" not in err


def test_terminal_report_fits_100_columns_without_cutting_numbers(finished_suite):
    env = {**os.environ, "COLUMNS": "100"}
    result = subprocess.run([sys.executable, "-m", "galbench.cli", "report", str(finished_suite)], env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "…" not in result.stdout
    report = json.loads((finished_suite / "report" / "report.json").read_text())
    for arm in report["arms"]:  # every mean and interval is printed whole on one line
        test = arm["accuracy"]["test_accuracy"]
        cell = f"{test['mean']:.3f} [{test['ci'][0]:.3f}, {test['ci'][1]:.3f}]"
        assert any(cell in line for line in lines), cell
    assert "GFLOPs" in result.stdout  # a human unit chosen for the cost table


def test_compare_warns_when_environments_differ(cli, finished_suite, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(finished_suite, other)
    env = json.loads((other / "environment.json").read_text())
    env["device_name"] = "NVIDIA H200"
    (other / "environment.json").write_text(json.dumps(env))
    code, out, err = cli("compare", finished_suite, other)
    assert code == 0 and "environments differ in device_name" in err and "NVIDIA H200 (B)" in err
    assert "scratch" in out and "'" not in err
    report = load_report(finished_suite)
    km = report.analysis.arms[0].km["epochs_to:0.4"]
    assert re.search(rf"scratch\s+0\.4\s+{km.n_reached}/{km.n}\s+{km.n_reached}/{km.n}\s", out)


def test_old_run_directory_still_reports(cli, tmp_path):
    """A run directory written by galbench 0.2.0 (no new fields) reports with the new statistics."""
    copy = tmp_path / "old"
    shutil.copytree(OLD_RUN_DIR, copy)
    code, out, err = cli("report", copy)
    assert code == 0, err
    report = json.loads((copy / "report" / "report.json").read_text())
    assert report["runs_found"]["finished"] == 6 and report["runs_found"]["complete"]
    (primary,) = report["confirmatory"]
    assert primary["test"]["name"] == "permutation mean difference"
    assert primary["test"]["p_floor"] == pytest.approx(0.1)
    assert "seeds only" in primary["ci_method"]  # 0.2.0 logged no test labels: no resampling of test galaxies
    for run in report["runs"]:  # not recorded then: absent, or derived from the logged per-class recall
        assert run["test_balanced_accuracy"] is None or run["test_balanced_accuracy"] == pytest.approx(
            np.mean(run["recall"]), abs=1e-6)
    assert "no difference detected" in report["headline"][0]
    assert "intervals that resample test galaxies" in report["design"]["not recorded"]
    assert (copy / "report" / "report.html").stat().st_size > 0


def test_html_report_renders_in_headless_chromium(reported, finished_suite, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (.ci/run installs it: apt-get install chromium)")
    page = (finished_suite / "report" / "report.html").as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1200,1600", f"--screenshot={shot}", page], check=True,
                   capture_output=True, timeout=120)
    dom = subprocess.run([*flags, "--dump-dom", page], check=True, capture_output=True, text=True, timeout=120).stdout
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert (pixels.reshape(-1, 3).sum(1) < 600).mean() > 0.02  # not blank: text and figures drawn
    report = reported[3]
    text = re.sub(r"<[^>]+>", " ", dom)
    assert " ".join(report["headline"][0].split())[:80] in " ".join(text.split()).replace("&amp;", "&")
    # the answer comes first, the figures drawn: matplotlib's first two arm colours are on the first screen
    assert dom.index('id="answer"') < dom.index('id="data"') < dom.index('id="design"')
    flat = pixels.reshape(-1, 3)
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(flat - colour).sum(1) < 30).sum() > 50, colour


@pytest.mark.slow
def test_an_arm_that_cannot_learn_gets_no_time_to_threshold_p_below_005(tmp_path):
    """Issue 13: 3 seeds, 2 arms, one with lr 1e-9: no time-to-threshold p-value below 0.05 (exact floor 0.1)."""
    extra = '\n[[variant]]\nname = "frozen"\nmodel = "alexnet-tiny"\ninit = "scratch"\ntrain = { lr = 1e-9 }\n'
    data = 'synth = { n = 300, size = 64, seed = 0, classes = "elliptical,spiral,edge-on" }'
    suite = write_suite(tmp_path, name="frozen", seeds=3, epochs=3, data=data, extra=extra)
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--no-report"]) == 0
    report = load_report(tmp_path / "run")
    timed = [c for c in report.analysis.confirmatory + report.analysis.exploratory if c.endpoint.kind == "time"]
    tested = [c for c in timed if c.test is not None]
    assert tested and all(c.test.p_value >= 0.05 for c in tested)
    assert all(not c.detected for c in timed)
