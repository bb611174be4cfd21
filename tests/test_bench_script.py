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
