"""Reports: recomputed from a run directory, p-values that match a hand calculation, HTML that renders."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from scipy import stats as scipy_stats

from galbench.analysis.report import load_report


def test_report_writes_markdown_html_json_and_plots(cli, finished_suite):
    code, out, err = cli("report", finished_suite)
    assert code == 0, err
    folder = finished_suite / "report"
    for name in ("report.md", "report.html", "report.json", "learning_curves.png", "kaplan_meier.png",
                 "accuracy_vs_flops.png", "accuracy_vs_device_hours.png", "time_to_threshold.png",
                 "confusion_winner.png"):
        assert (folder / name).stat().st_size > 0, name
    assert "time to validation accuracy 0.4" in out and "final test accuracy" in out
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6
    assert "http://" not in html and "https://" not in html  # self-contained: opens offline
    assert "Verdicts" in (folder / "report.md").read_text()


def test_report_p_values_match_a_hand_calculation(cli, finished_suite):
    cli("report", finished_suite)
    report = json.loads((finished_suite / "report" / "report.json").read_text())
    runs = report["runs"]
    raw = []
    for item in report["time_to_threshold"]:
        threshold = str(item["threshold"])

        def arm(name, threshold=threshold):
            rows = [r["thresholds"][threshold] for r in runs if r["variant"] == name]
            return np.array([r["epochs"] for r in rows], float), np.array([r["reached"] for r in rows], bool)

        (t_v, r_v), (t_b, r_b) = arm(item["variant"]), arm("scratch")
        if r_v.any() or r_b.any():
            expected = scipy_stats.logrank(scipy_stats.CensoredData(t_v[r_v], right=t_v[~r_v]),
                                           scipy_stats.CensoredData(t_b[r_b], right=t_b[~r_b])).pvalue
            assert item["logrank_p"] == pytest.approx(expected)
        slow_v, slow_b = np.where(r_v, t_v, np.inf), np.where(r_b, t_b, np.inf)
        pairs = sum((b > v) + 0.5 * (b == v) for v in slow_v for b in slow_b)
        assert item["probability_of_improvement"] == pytest.approx(pairs / 9)
        raw += [item["logrank_p"], item["mann_whitney_p"]]
    for item in report["accuracy"]:
        if item["difference"] is not None:
            raw += [item["welch_p"], item["mann_whitney_p"]]
    accuracy = next(a for a in report["accuracy"] if a["variant"] == "faster" and a["split"] == "test")
    base = next(a for a in report["accuracy"] if a["variant"] == "scratch" and a["split"] == "test")
    if np.ptp(accuracy["values"] + base["values"]) > 0:
        assert accuracy["welch_p"] == pytest.approx(
            scipy_stats.ttest_ind(accuracy["values"], base["values"], equal_var=False).pvalue)
    # Holm by hand over every p-value in the report
    present = sorted(p for p in raw if p is not None)
    m, running, holm = len(present), 0.0, []
    for rank, p in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        holm.append(running)
    adjusted = sorted([i["logrank_p_adjusted"] for i in report["time_to_threshold"] if i["logrank_p"] is not None]
                      + [i["mann_whitney_p_adjusted"] for i in report["time_to_threshold"]
                         if i["mann_whitney_p"] is not None]
                      + [a[k] for a in report["accuracy"] for k in ("welch_p_adjusted", "mann_whitney_p_adjusted")
                         if a[k] is not None])
    assert sorted(adjusted) == pytest.approx(sorted(holm))


def test_report_is_recomputed_from_event_logs_not_results_json(finished_suite, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished_suite, copy)
    (copy / "results.json").write_text(json.dumps({"runs": []}))
    report = load_report(copy)
    assert len(report.runs) == 6 and {r["variant"] for r in report.runs} == {"scratch", "faster"}


def test_compare_warns_when_environments_differ(cli, finished_suite, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(finished_suite, other)
    env = json.loads((other / "environment.json").read_text())
    env["device_name"] = "NVIDIA H200"
    (other / "environment.json").write_text(json.dumps(env))
    code, out, err = cli("compare", finished_suite, other)
    assert code == 0 and "environments differ in device_name" in err and "scratch" in out


def test_html_report_renders_in_headless_chromium_with_its_plots(cli, finished_suite, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (.ci/run installs it: apt-get install chromium)")
    cli("report", finished_suite)
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,4000", f"--screenshot={shot}",
                    (finished_suite / "report" / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    # matplotlib's first two line colours must be on screen: the embedded plots were drawn
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(pixels - colour).sum(1) < 30).sum() > 200, colour
