"""One writer per run directory and per cache entry being built, tested with real processes.

A second command gets one line naming the holder's PID and exits 2; a lock whose holder was killed does
not block (fcntl locks die with their process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from galbench.errors import GalbenchError
from galbench.fileio import cache_dir, content_hash
from tests.conftest import write_suite

HOLD = """
import sys, time
from galbench.fileio import exclusive_lock
with exclusive_lock(sys.argv[1], "test"):
    print("locked", flush=True)
    time.sleep(600)
"""


def _galbench(*args):
    return [sys.executable, "-m", "galbench.cli", *map(str, args)]


def _holder(lock: Path) -> subprocess.Popen:
    """A real process holding `lock`, returned once it holds it."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def _one_line(code_out_err, *fragments):
    code, _, err = code_out_err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_second_run_into_the_same_directory_stops_with_the_first_ones_pid(tmp_path):
    env = {**os.environ, "COLUMNS": "300"}
    suite = write_suite(tmp_path, seeds=1, epochs=500)  # far longer than the test: the first is killed
    out = tmp_path / "run"
    first = subprocess.Popen(_galbench("run", suite, "--out", out, "--no-report"), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = out / ".galbench.lock"
        log = out / "runs" / "scratch__seed0" / "events.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and not (log.exists() and '"eval"' in log.read_text()):
            time.sleep(0.05)  # the first one is training
        before = log.read_text()
        second = subprocess.run(_galbench("run", suite, "--out", out, "--no-report"), env=env,
                                capture_output=True, text=True)
        assert first.poll() is None, "the first run ended before the second started: nothing was tested"
    finally:
        _kill(first)
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"error: {lock}: run directory is in use by galbench process {first.pid} (wait for it to finish, or stop "
        "it)"]
    # the second one wrote nothing: the log holds one start, and only the first one's evaluations
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert [e["event"] for e in events].count("run_start") == 1
    assert log.read_text().startswith(before)


def test_a_lock_left_by_a_killed_process_does_not_block(cli, tmp_path):
    suite = write_suite(tmp_path, seeds=1, epochs=1)
    out = tmp_path / "run"
    out.mkdir()
    holder = _holder(out / ".galbench.lock")
    _one_line(cli("run", suite, "--out", out), f"run directory is in use by galbench process {holder.pid}")
    _kill(holder)
    assert (out / ".galbench.lock").read_text().strip() == str(holder.pid)  # the file stays; the lock died
    code, _, err = cli("-q", "run", suite, "--out", out, "--no-report")
    assert code == 0, err
    assert (out / "runs/scratch__seed0/final.pt").exists() and not (out / ".galbench.lock").exists()


def test_a_synth_catalog_being_made_by_another_process_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # parameters no other test uses, so the session's shared cache does not hold this catalog
    params = {"n": 37, "size": 64, "seed": 5, "classes": "elliptical,spiral,edge-on", "star_probability": 0.3}
    target = cache_dir("synth") / f"synth-{content_hash(params)}.fits"
    assert not target.exists()
    holder = _holder(target.with_name(target.name + ".lock"))
    suite = write_suite(tmp_path, data='synth = { n = 37, size = 64, seed = 5, classes = "elliptical,spiral,edge-on" }')
    try:
        _one_line(cli("run", suite), f"{target}.lock: cached simulated catalog is in use by galbench "
                                                     f"process {holder.pid}")
    finally:
        _kill(holder)
    assert not (tmp_path / "reports").exists() and not target.exists()


def test_a_pretraining_being_made_by_another_process_is_one_line(tmp_path):
    from galbench.fileio import cache_entry

    target = tmp_path / "fractal-abc.pt"
    holder = _holder(target.with_name(target.name + ".lock"))
    try:
        with pytest.raises(GalbenchError, match=f"cached pretraining is in use by galbench process {holder.pid}"):
            with cache_entry(target, "cached pretraining"):
                pass
    finally:
        _kill(holder)
    with cache_entry(target, "cached pretraining") as missing:  # free again once the holder died
        assert missing
        target.write_bytes(b"made")
    with cache_entry(target, "cached pretraining") as missing:  # made: no lock taken, nothing to do
        assert not missing
