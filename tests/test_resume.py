"""Interrupted suites resume: a real subprocess killed with SIGKILL, then the same command again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import write_suite


def _galbench(*args):
    return [sys.executable, "-m", "galbench.cli", *map(str, args)]


def _evals(run_dir):
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"eval"' in line]


def test_sigkill_mid_run_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    suite = write_suite(tmp_path, seeds=2, epochs=5)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_galbench("run", suite, "--out", whole), env=env, check=True, capture_output=True)

    process = subprocess.Popen(_galbench("run", suite, "--out", killed), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = killed / "runs" / "scratch__seed1"
    deadline = time.time() + 300
    # kill during seed 1, after its checkpoint at the end of epoch 2 exists
    while time.time() < deadline:
        if (second / "last.pt").exists() and any(e["epochs"] >= 2.5 for e in _evals(second)):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "runs/scratch__seed0/final.pt").exists()  # seed 0 had finished
    assert not (second / "final.pt").exists()
    finished_log = (killed / "runs/scratch__seed0/events.jsonl").read_bytes()

    rerun = subprocess.run(_galbench("run", suite, "--out", killed), env=env, capture_output=True,
                           text=True)
    assert rerun.returncode == 0, rerun.stderr
    # the finished run was not redone, the interrupted one resumed rather than restarted
    assert (killed / "runs/scratch__seed0/events.jsonl").read_bytes() == finished_log
    events = [json.loads(line) for line in (second / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("run_start") == 1
    assert any(e["event"] == "run_resume" and e["epoch"] >= 2 for e in events)
    # on the CPU the resumed run's results equal the uninterrupted run's
    for seed in (0, 1):
        a, b = (_evals(root / "runs" / f"scratch__seed{seed}") for root in (whole, killed))
        assert [(e["epochs"], e["samples"], e["train_flops"], e["val_accuracy"], e["val_loss"]) for e in a] == \
               [(e["epochs"], e["samples"], e["train_flops"], e["val_accuracy"], e["val_loss"]) for e in b]
    results = [json.loads((root / "results.json").read_text())["runs"] for root in (whole, killed)]
    assert [r["test_accuracy"] for r in results[0]] == [r["test_accuracy"] for r in results[1]]
    assert [r["confusion"] for r in results[0]] == [r["confusion"] for r in results[1]]


def test_rerunning_a_finished_suite_trains_nothing(cli, tmp_path):
    suite = write_suite(tmp_path, seeds=1, epochs=1)
    out = tmp_path / "out"
    assert cli("run", suite, "--out", out)[0] == 0
    log = out / "runs/scratch__seed0/events.jsonl"
    before = log.read_bytes()
    assert cli("run", suite, "--out", out)[0] == 0
    assert log.read_bytes() == before


def test_adding_seeds_keeps_the_run_directory_and_trains_only_the_new_seed(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = write_suite(tmp_path, seeds=1, epochs=1)
    assert cli("run", suite)[0] == 0
    (run_dir,) = (tmp_path / "reports" / "tiny").iterdir()
    first = (run_dir / "runs/scratch__seed0/events.jsonl").read_bytes()
    assert cli("run", suite, "--seeds", 2)[0] == 0
    assert [p.name for p in (tmp_path / "reports" / "tiny").iterdir()] == [run_dir.name]
    assert (run_dir / "runs/scratch__seed0/events.jsonl").read_bytes() == first
    assert (run_dir / "runs/scratch__seed1/final.pt").exists()


def test_a_suite_keeps_its_run_directory_across_the_upgrade_from_0_2(tmp_path):
    from galbench.experiment.suite import load_suite

    extra = ('\n[[variant]]\nname = "fractal"\nmodel = "alexnet-tiny"\ninit = "fractal"\n'
             'fractal = { classes = 4, per_class = 20 }\n\n[[pretrained]]\nname = "sim"\nsynth = { n = 50 }\n')
    path = write_suite(tmp_path, extra=extra)
    # the identities galbench 0.2.0 (commit ee64687) gives these suites: new keys at their defaults keep them
    assert load_suite(path)[0].identity() == "9e6992912de5"
    assert load_suite(path, ["train.evals_per_epoch=1"])[0].identity() == "260ad1db173a"
    assert load_suite(path, ["analysis.alpha=0.01"])[0].identity() == "9e6992912de5"  # statistics change no run
    changed = {load_suite(path, [setting])[0].identity() for setting in
               ("suite.threshold_metric='balanced_accuracy'", "data.split.per_seed=true", "train.sampler='balanced'",
                "variant.fractal.fractal.replicates=2", "suite.train_sizes=[10]")}
    assert len(changed) == 5 and "9e6992912de5" not in changed
# Runs galbench with the write of epoch 2's last.pt stopped half-way (a temporary file holding a fraction of
# it), so that the test can kill the process while that background write is in flight.
STALLED_WRITE = """
import sys, time
from pathlib import Path
import galbench.experiment.train as train
from galbench.cli import main
from galbench.fileio import atomic_path

real = train.save_checkpoint

def stalled(checkpoint, path):
    if path.name == "last.pt" and checkpoint["epoch"] == 2:
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"PK\\x03\\x04 a fraction of a checkpoint")
            Path(sys.argv[1]).touch()
            time.sleep(600)
    real(checkpoint, path)

train.save_checkpoint = stalled
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_during_a_background_checkpoint_write_then_rerun_matches(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    suite = write_suite(tmp_path, seeds=1, epochs=3)
    whole, killed, marker = tmp_path / "whole", tmp_path / "killed", tmp_path / "writing"
    subprocess.run(_galbench("run", suite, "--out", whole, "--no-report"), env=env, check=True, capture_output=True)
    process = subprocess.Popen([sys.executable, "-c", STALLED_WRITE, str(marker), "run", str(suite), "--out",
                                str(killed), "--no-report"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not marker.exists() and process.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), "the write never started"
    process.send_signal(signal.SIGKILL)
    process.wait()
    run_dir = killed / "runs" / "scratch__seed0"
    assert list(run_dir.glob(".last.pt.*.tmp"))  # the kill cut a write short ...
    from galbench.models.weights import load_checkpoint

    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1  # ... and last.pt is still epoch 1's, whole

    rerun = subprocess.run(_galbench("run", suite, "--out", killed, "--no-report"), env=env, capture_output=True,
                           text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(run_dir.glob(".*.tmp"))
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "run_resume"] == [1]
    a, b = (_evals(root / "runs" / "scratch__seed0") for root in (whole, killed))
    assert [(e["epochs"], e["samples"], e["val_accuracy"], e["val_loss"]) for e in a] == \
           [(e["epochs"], e["samples"], e["val_accuracy"], e["val_loss"]) for e in b]
    results = [json.loads((root / "results.json").read_text())["runs"][0] for root in (whole, killed)]
    assert results[0]["test_accuracy"] == results[1]["test_accuracy"]
    assert results[0]["confusion"] == results[1]["confusion"]
