"""Progress where stderr is not a terminal (CI logs): plain timestamped lines, never minutes of silence."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from galbench import console
from tests.conftest import write_suite

STAMP = re.compile(r"^\[(\d\d:\d\d:\d\d)\] (.*)$")


@pytest.fixture
def fast_interval(monkeypatch):
    """Status lines every 0.05 s instead of every 30 s, so a test of seconds shows the rule."""
    monkeypatch.setattr(console, "PLAIN_INTERVAL_SECONDS", 0.05)


def _stamped(err: str) -> list[tuple[datetime, str]]:
    lines = []
    for line in err.splitlines():
        match = STAMP.match(line)
        if match:
            lines.append((datetime.strptime(match.group(1), "%H:%M:%S"), match.group(2)))
    return lines


def test_a_run_with_stderr_captured_logs_runs_data_and_status_lines(cli, tmp_path, fast_interval, monkeypatch):
    import time

    from galbench.experiment import train

    evaluate = train.evaluate

    def slow_evaluate(*args, **kwargs):  # every evaluation outlasts the interval, however fast the machine
        time.sleep(0.06)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", slow_evaluate)
    data = 'synth = { n = 61, size = 64, seed = 3, classes = "elliptical,spiral,edge-on" }'  # made in this test
    suite = write_suite(tmp_path, seeds=2, epochs=2, data=data)
    code, out, err = cli("run", suite, "--out", tmp_path / "run", "--no-report")
    assert code == 0, err
    lines = _stamped(err)
    texts = [text for _, text in lines]
    assert "simulating galaxies: started, 61 galaxies" in texts
    assert any(text.startswith("simulating galaxies: finished 61/61 in") for text in texts)
    assert "2 runs to do" in texts
    accuracies = []
    for seed in (0, 1):
        start = texts.index(f"scratch seed {seed}: started (2 epochs)")
        stop = next(k for k, text in enumerate(texts) if text.startswith(f"scratch seed {seed}: finished, test acc"))
        assert texts[stop].endswith(f"({seed + 1}/2 runs)")
        accuracies.append(texts[stop].split("test acc ")[1].split()[0])
        # while a run trains, a status line at least every interval (one-second stamps, some slack for load)
        during = [moment for moment, _ in lines[start:stop + 1]]
        assert max((b - a).total_seconds() for a, b in zip(during, during[1:], strict=False)) <= 3
        assert any("training" in text for text in texts[start:stop])
    assert "results in" in err and "\x1b[" not in err  # no terminal control codes in a log
    # the same command again reads both runs back and says so, run by run
    code, _, err = cli("run", suite, "--out", tmp_path / "run", "--no-report")
    assert code == 0, err
    texts = [text for _, text in _stamped(err)]
    assert [t for t in texts if "finished" in t and "seed" in t] == [
        f"scratch seed {seed}: finished earlier (read back), test acc {acc} ({seed + 1}/2 runs)"
        for seed, acc in enumerate(accuracies)]


def test_a_classification_logs_plain_progress(cli, tmp_path, finished_suite):
    from galbench.data.catalog import write_catalog
    from galbench.data.synth import SynthParams, synthesize

    write_catalog(tmp_path / "sim.fits", synthesize(SynthParams(n=40, seed=9), workers=1))
    code, _, err = cli("classify", tmp_path / "sim.fits", "--model", finished_suite / "export" / "winner.onnx",
                       "--out", tmp_path / "out.fits")
    assert code == 0, err
    texts = [text for _, text in _stamped(err)]
    assert texts[0] == "classifying: started, 40 galaxies"
    assert texts[-1].startswith("classifying: finished 40/40 in")


def test_quiet_silences_the_log_but_not_errors(cli, tmp_path):
    suite = write_suite(tmp_path, seeds=1, epochs=1)
    code, out, err = cli("-q", "run", suite, "--out", tmp_path / "run", "--no-report")
    assert code == 0 and err == ""
    assert "scratch" in out  # the results table still goes to stdout


def test_plain_rates_keep_two_significant_digits_below_ten():
    assert console._rate(3, 10.0, "epochs") == ", 0.3 epochs/s"  # not "0 epochs/s"
    assert console._rate(7, 3.0, "epochs") == ", 2.3 epochs/s"
    assert console._rate(19_799, 1.0, "galaxies") == ", 19,799 galaxies/s"
    assert console._rate(5, 0.0, "epochs") == "" and console._rate(0, 1.0, "epochs") == ""
