"""The figure scripts run end to end (tiny sizes on the CPU: this checks the code, it measures nothing)."""

from __future__ import annotations

import json

from galbench import bench


def test_scaling_script_writes_figures_and_plot(tmp_path):
    result = bench.scaling(tmp_path, classify_rows=(100, 300), train_rows=(100, 200))
    name = bench.machine_name()
    stored = json.loads((tmp_path / f"scaling-{name}.json").read_text())
    assert [f["rows"] for f in stored["classify"]] == [100, 300] and [f["rows"] for f in stored["train"]] == [100, 200]
    assert all(f["seconds"] > 0 and f["peak_rss_mb"] > 50 for f in result["classify"])
    assert (tmp_path / f"scaling-{name}.png").stat().st_size > 1000


def test_gpu_script_quick_path_on_this_machine(tmp_path):
    result = bench.gpu(tmp_path, quick=True)
    stored = json.loads((tmp_path / f"{bench.machine_name()}.json").read_text())
    assert stored["training"]["ratio_to_bare"] > 0 and stored["suite"]["seeds"] == 2
    assert result["suite"]["wall_seconds"] > 0
    # each phase is written as it ends, so a run stopped by a time limit keeps what it measured
    assert set(stored["phase_seconds"]) == {"data", "training", "suite", "classify"}


def test_gpu_script_phases_split_over_runs_keep_each_others_figures(tmp_path):
    bench.gpu(tmp_path, quick=True, phases=("classify",))
    path = tmp_path / f"{bench.machine_name()}.json"
    first = json.loads(path.read_text())
    assert "classify_torch_cpu" in first and "training" not in first and "suite" not in first
    bench.gpu(tmp_path, quick=True, phases=("training",))
    both = json.loads(path.read_text())
    assert both["classify_torch_cpu"] == first["classify_torch_cpu"] and both["training"]["ratio_to_bare"] > 0
    assert set(both["phase_seconds"]) == {"data", "classify", "training"}


def test_tta_script_measures_every_model_and_records_an_int8_refusal(finished_suite, tmp_path, monkeypatch):
    from galbench.inference import quantize

    monkeypatch.setattr(quantize, "passes_gate", lambda *args: False)  # as a model the gate refuses
    result = bench.tta(finished_suite, tmp_path, repeats=1)
    rows = {row["model"]: row for row in result["models"]}
    assert len(rows) == 7
    for name, row in rows.items():
        if name.startswith("int8"):
            assert "fails the parity gate" in row["refused"]
        else:
            assert 0 <= row["accuracy"] <= 1 and row["galaxies_per_second"] > 0 and row["temperature"] > 0
    assert rows["fp32, 1 view, raw softmax"]["temperature"] == 1.0
    written = json.loads(next(tmp_path.glob("tta-*.json")).read_text())
    assert written["test_galaxies"] == result["test_galaxies"] > 0
    # the exported model scores what the run's own evaluation scored on the same test images
    winner = json.loads((finished_suite / "export" / "exports.json").read_text())["winner"]
    assert abs(rows["fp32, 1 view"]["accuracy"] - winner["test_accuracy"]) < 1e-6
