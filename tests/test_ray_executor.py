"""Suites and catalogs on a real local Ray cluster (started here): same results, retries, sharding."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray (the ray extra) is not installed")

from galbench.data.catalog import read_catalog  # noqa: E402
from galbench.experiment.executors import RayExecutor  # noqa: E402
from galbench.experiment.runner import run_suite  # noqa: E402
from galbench.experiment.suite import load_suite  # noqa: E402
from tests.conftest import write_suite  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cache = str(tmp_path_factory.getbasetemp() / "galbench-cache")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"GALBENCH_CACHE": cache}})
    yield ray
    ray.shutdown()


def _evals(run_dir):
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [(e["epochs"], e["samples"], e["val_accuracy"], e["val_loss"])
            for e in map(json.loads, lines) if e["event"] == "eval"]


def test_ray_executor_gives_the_local_executors_results(cluster, tmp_path, cli):
    extra = '\n[[variant]]\nname = "faster"\nmodel = "alexnet-tiny"\ninit = "scratch"\ntrain = { lr = 0.004 }\n'
    path = write_suite(tmp_path, seeds=2, epochs=2, extra=extra)
    assert cli("run", path, "--out", tmp_path / "local", "--no-report")[0] == 0
    code, _, err = cli("run", path, "--out", tmp_path / "ray", "--no-report", "--executor", "ray",
                       "--set", "executor.cpus_per_run=2")
    assert code == 0, err
    for name in ("scratch__seed0", "scratch__seed1", "faster__seed0", "faster__seed1"):
        local, remote = tmp_path / "local" / "runs" / name, tmp_path / "ray" / "runs" / name
        assert _evals(local) == _evals(remote), name
        assert (remote / "final.pt").exists() and (remote / "best.pt").exists() and not (remote / "last.pt").exists()
    results = [json.loads((tmp_path / d / "results.json").read_text())["runs"] for d in ("local", "ray")]
    assert [r["test_accuracy"] for r in results[0]] == [r["test_accuracy"] for r in results[1]]
    assert (tmp_path / "ray" / "export" / "winner.onnx").exists()


def test_a_killed_worker_is_retried_from_its_last_checkpoint(cluster, tmp_path):
    # long enough that the worker is still training when the driver has seen epoch 2, on a fast machine too
    epochs = 40
    path = write_suite(tmp_path, seeds=1, epochs=epochs)
    suite, base = load_suite(path, ["executor.kind='ray'"])
    out = tmp_path / "out"
    run_dir = out / "runs" / "scratch__seed0"
    outcome = {}

    def drive():
        try:
            outcome["result"] = run_suite(suite, base, out=out, executor=RayExecutor(max_retries=2))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until the driver holds a checkpoint of epoch 2 or later
        if (run_dir / "last.pt").exists() and any(e[0] >= 2 for e in _evals(run_dir)):
            break
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-f", "ray::_remote_train"], capture_output=True, text=True).stdout.split()
    assert workers, "no Ray worker was running the training task"
    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)
    driver.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    retries = json.loads((run_dir / "retries.json").read_text())
    assert retries["retries"] >= 1
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("run_start") == 1  # resumed, not restarted
    assert any(e["event"] == "run_resume" and e["epoch"] >= 2 for e in events)
    assert [e["epochs"] for e in events if e["event"] == "eval"] == [k / 2 for k in range(1, 2 * epochs + 1)]
    results = json.loads((out / "results.json").read_text())["runs"]
    assert results[0]["retries"] >= 1 and results[0]["finished"]
    from galbench.analysis.report import load_report, markdown_report

    report = load_report(out)
    assert "retried" in markdown_report(report, [])


def test_sharded_classification_equals_unsharded_row_for_row(cluster, finished_suite, tmp_path, monkeypatch):
    from galbench.data.catalog import write_catalog
    from galbench.data.synth import SynthParams, synthesize

    classify_module = importlib.import_module("galbench.inference.classify")
    monkeypatch.setattr(classify_module, "CHUNK_ROWS", 64)
    catalog = tmp_path / "sim.fits"
    write_catalog(catalog, synthesize(SynthParams(n=300, size=64, seed=5, classes="elliptical,spiral,edge-on"),
                                      workers=1))
    model = finished_suite / "export" / "winner.onnx"
    local = classify_module.classify(catalog, model=model, out=tmp_path / "local.fits", backend="onnxruntime")
    sharded = classify_module.classify(catalog, model=model, out=tmp_path / "ray.fits", executor="ray")
    assert list(local["objid"]) == list(sharded["objid"])
    assert (local["pred_label"] == sharded["pred_label"]).all()
    np.testing.assert_allclose(local["pred_confidence"], sharded["pred_confidence"], rtol=1e-6)
    from astropy.io import fits

    assert fits.getheader(tmp_path / "ray.fits", "CATALOG")["BACKEND"] == "onnxruntime on ray"
    assert len(read_catalog(tmp_path / "ray.fits", require_images=False)) == 300


def test_pretraining_is_one_ray_task_that_the_runs_wait_for(cluster, tmp_path, cli):
    extra = ('\n[[variant]]\nname = "fractal"\nmodel = "alexnet-tiny"\ninit = "fractal"\n'
             'fractal = { classes = 4, per_class = 20, size = 64, epochs = 1, seed = 3 }\n')
    path = write_suite(tmp_path, seeds=2, epochs=1, extra=extra)
    code, _, err = cli("run", path, "--out", tmp_path / "ray", "--no-report", "--executor", "ray")
    assert code == 0, err
    runs = json.loads((tmp_path / "ray" / "results.json").read_text())["runs"]
    fractal = [r for r in runs if r["variant"] == "fractal"]
    assert len(fractal) == 2 and all(r["finished"] and r["pretrain_shared_by"] == 2 for r in fractal)
    assert fractal[0]["pretrain_cost"]["samples"] == 4 * 17 and fractal[0]["pretrain_cost"] == fractal[1]["pretrain_cost"]
