"""The GPU path: bf16 training, resume after SIGKILL, fp16 classification, NVML energy, torch.compile.

Every test here needs CUDA and is skipped, with the reason, where torch sees none; `pytest -m gpu` runs
only these. They are small (a few hundred 64 px galaxies, alexnet-small) so that they fit a short GPU lease.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from galbench.cli import main
from tests.conftest import write_suite

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")]

SYNTH = 'synth = { n = 400, size = 64, seed = 0, classes = "elliptical,spiral,edge-on" }'
MODEL = '\n[[variant]]\nname = "small"\nmodel = "alexnet-small"\ninit = "scratch"\n'


def _suite(folder: Path, epochs: int = 6, seeds: int = 3) -> Path:
    """Two arms (alexnet-tiny and alexnet-small from scratch) on 400 simulated galaxies."""
    return write_suite(folder, name="gpu", seeds=seeds, epochs=epochs, data=SYNTH, extra=MODEL)


def _results(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text())["runs"]


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same suite trained on the CPU in fp32 and on CUDA in bf16."""
    folder = tmp_path_factory.mktemp("gpu-suite")
    suite = _suite(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GALBENCH_CACHE", str(folder / "cache"))
        for name, device, precision in (("cpu", "cpu", "fp32"), ("cuda", "cuda", "bf16")):
            code = main(["-q", "run", str(suite), "--out", str(folder / name), "--no-report", "--device", device,
                         "--set", f"train.precision='{precision}'"])
            assert code == 0
    return {"cpu": folder / "cpu", "cuda": folder / "cuda"}


def test_bf16_on_cuda_reaches_the_accuracy_of_fp32_on_the_cpu(runs):
    cpu, cuda = _results(runs["cpu"]), _results(runs["cuda"])
    assert all(r["finished"] for r in cpu + cuda)
    for variant in ("scratch", "small"):
        accuracy = {name: np.mean([r["test_accuracy"] for r in rows if r["variant"] == variant])
                    for name, rows in (("cpu", cpu), ("cuda", cuda))}
        assert accuracy["cuda"] > 0.5 and accuracy["cpu"] > 0.5  # both learned (chance is 1/3)
        assert abs(accuracy["cuda"] - accuracy["cpu"]) <= 0.08, accuracy
    start = _events(runs["cuda"] / "runs" / "small__seed0")[0]
    assert start["device"].startswith("cuda") and start["precision"] == "bf16"


def test_nvml_energy_is_positive_and_within_the_cards_power(runs):
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py (galbench[gpu]) is not installed")
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as exc:
        pytest.skip(f"this GPU has no NVML energy counter ({exc})")
    limit_watts = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
    for run in (runs["cuda"] / "runs").iterdir():
        last = [e for e in _events(run) if e["event"] == "eval"][-1]
        joules, wall = last["energy_joules"], last["wall_seconds"]
        device_seconds = last["device_seconds"] + last["eval_device_seconds"]
        assert joules is not None and joules > 0
        # the card's average power over the run cannot exceed its power limit; per device-second it is at
        # least a few watts (a GPU that computes draws more than that) and at most the limit scaled by the
        # idle share of the wall time
        assert joules / wall <= 1.05 * limit_watts
        assert 5 <= joules / device_seconds <= 1.05 * limit_watts * wall / device_seconds


def test_fp16_torch_classification_agrees_with_onnx_runtime_on_the_cpu(runs, tmp_path):
    import onnxruntime as ort
    from astropy.io import fits

    from galbench.data.catalog import read_catalog, write_catalog
    from galbench.data.synth import SynthParams, synthesize

    catalog = synthesize(SynthParams(n=1000, size=64, seed=21), workers=os.cpu_count())
    write_catalog(tmp_path / "fresh.fits", catalog)
    model = runs["cuda"] / "export" / "winner.onnx"
    assert main(["-q", "classify", str(tmp_path / "fresh.fits"), "--model", str(model), "--backend", "torch",
                 "--out", str(tmp_path / "torch.fits")]) == 0
    on_gpu = read_catalog(tmp_path / "torch.fits", require_images=False)
    assert "fp16" in fits.getheader(tmp_path / "torch.fits", "CATALOG")["PROVIDRS"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    reference = np.concatenate([session.run(["probabilities"], {"images": np.ascontiguousarray(catalog.images[k:k + 250])})[0]
                                for k in range(0, len(catalog), 250)]).argmax(1)
    agreement = (np.asarray(on_gpu.table["pred_label"]) == reference).mean()
    assert agreement >= 0.995, agreement


def test_sigkill_on_cuda_then_rerun_resumes(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    suite = _suite(tmp_path, epochs=6, seeds=1)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "galbench.cli", "-q", "run", str(suite), "--out", str(out), "--no-report",
               "--device", "cuda"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = out / "runs" / "scratch__seed0"
    deadline = time.time() + 300
    while time.time() < deadline:
        evals = [e for e in _events(run) if e["event"] == "eval"] if (run / "events.jsonl").exists() else []
        if (run / "last.pt").exists() and evals and evals[-1]["epochs"] >= 2.5:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "final.pt").exists(), "the run finished before the kill: nothing was tested"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    events = _events(run)
    names = [e["event"] for e in events]
    assert names.count("run_start") == 1 and names.count("run_stop") == 1
    resumed = [e["epoch"] for e in events if e["event"] == "run_resume"]
    assert resumed and resumed[0] >= 2
    evals = [e for e in events if e["event"] == "eval"]
    # every evaluation point once, in order (2 per epoch), as in an uninterrupted run
    epochs, samples = [e["epochs"] for e in evals], [e["samples"] for e in evals]
    assert len(epochs) == 12 and epochs == sorted(set(epochs)) and epochs[-1] == 6
    assert samples == sorted(set(samples))


def test_compiled_training_runs_end_to_end(tmp_path):
    suite = _suite(tmp_path, epochs=2, seeds=1)
    out = tmp_path / "compiled"
    assert main(["-q", "run", str(suite), "--out", str(out), "--device", "cuda", "--set", "train.compile=true"]) == 0
    results = _results(out)
    assert all(r["finished"] and r["test_accuracy"] is not None for r in results)
    assert (out / "export" / "winner.onnx").exists() and (out / "report" / "report.md").exists()
