"""Experiment design: pretraining replicates, per-seed splits, run order, one winner, consistent thresholds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from galbench.data.catalog import read_catalog
from galbench.experiment.runner import run_order, run_suite
from galbench.experiment.suite import load_suite
from galbench.experiment.train import accuracy_scores, results_from_events
from galbench.models.weights import load_checkpoint
from tests.conftest import write_suite

FRACTAL = ('\n[[variant]]\nname = "fractal"\nmodel = "alexnet-tiny"\ninit = "fractal"\n'
           'fractal = { classes = 4, per_class = 20, size = 64, epochs = 1, replicates = 2 }\n')


@pytest.fixture(scope="module")
def design_run(tmp_path_factory):
    """scratch and a 2-replicate fractal arm over 3 seeds, each seed its own split, thresholds on balanced accuracy."""
    folder = tmp_path_factory.mktemp("design")
    suite, base = load_suite(write_suite(folder, seeds=3, epochs=1, extra=FRACTAL),
                             ["data.split.per_seed=true", "suite.threshold_metric='balanced_accuracy'",
                              "suite.thresholds=[0.2, 0.4, 0.5]"])
    # a cache of its own: its pretrainings must not show up in other tests' caches
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GALBENCH_CACHE", str(folder / "cache"))
        out, results = run_suite(suite, base, out=folder / "out")
    return out, results


def _events(out, run):
    return [json.loads(line) for line in (out / "runs" / run / "events.jsonl").read_text().splitlines()]


def test_runs_execute_seed_major_with_the_arms_rotated_at_each_seed():
    order = run_order(["a", "b", "c"], [10, "all"], [0, 5])
    assert order == [("a", 10, 0), ("b", 10, 0), ("c", 10, 0), ("a", "all", 0), ("b", "all", 0), ("c", "all", 0),
                     ("b", 10, 5), ("c", 10, 5), ("a", 10, 5), ("b", "all", 5), ("c", "all", 5), ("a", "all", 5)]


def test_replicates_are_assigned_round_robin_and_each_run_carries_its_full_pretraining_cost(design_run):
    out, results = design_run
    fractal = [r for r in results if r["variant"] == "fractal"]
    assert [(r["seed"], r["replicate"]) for r in fractal] == [(0, 0), (1, 1), (2, 0)]
    assert fractal[0]["pretrain_id"] == fractal[2]["pretrain_id"] != fractal[1]["pretrain_id"]
    assert [r["pretrain_shared_by"] for r in fractal] == [2, 1, 2]
    for row in fractal:
        checkpoint = load_checkpoint(out.parent / "cache" / "pretrain" / f"{row['pretrain_id']}.pt")
        assert row["pretrain_cost"] == checkpoint["meta"]["pretrain_cost"]  # the whole cost, not a share
        assert checkpoint["meta"]["pretrain_source"]["seed"] == row["replicate"]  # an independent pretraining
        assert _events(out, row["run"])[0]["pretrain_id"] == row["pretrain_id"]
    assert fractal[0]["pretrain_cost"] != fractal[1]["pretrain_cost"]
    assert all(r["replicate"] is None and r["pretrain_id"] is None and r["pretrain_cost"] == {}
               for r in results if r["variant"] == "scratch")


def test_each_seed_has_its_own_split_and_both_arms_at_a_seed_share_it(design_run):
    out, results = design_run
    split = json.loads((out / "split.json").read_text())
    assert split["per_seed"] and sorted(split["seeds"]) == ["0", "1", "2"]
    assert split["seeds"]["1"]["seed"] == [0, 1]
    assert split["seeds"]["0"]["test"] != split["seeds"]["1"]["test"]
    suite = json.loads((out / "suite.resolved.json").read_text())
    labels = read_catalog(suite["catalog_path"]).labels
    for row in results:
        assert row["test_rows"] == split["seeds"][str(row["seed"])]["test"]
        assert row["test_labels"] == labels[row["test_rows"]].tolist()
        assert len(row["test_predictions"]) == len(row["test_rows"])
        assert sum(map(sum, row["confusion"])) == len(row["test_rows"])


def test_the_analysis_section_is_written_with_the_resolved_suite(design_run):
    out, _ = design_run
    resolved = json.loads((out / "suite.resolved.json").read_text())
    # primary None: the suite declared none (the report says so); the endpoint used is still test accuracy
    assert resolved["analysis"] == {"primary": None, "alpha": 0.05, "equivalence": None,
                                    "allow_unequal_budgets": False}
    assert resolved["primary_endpoint"] == {"kind": "accuracy", "metric": "test_accuracy"}
    assert resolved["suite"]["threshold_metric"] == "balanced_accuracy"


def test_threshold_events_and_results_agree_on_the_rounded_metric(design_run):
    out, results = design_run
    reached_somewhere = 0
    for row in results:
        events = _events(out, row["run"])
        evals = [e for e in events if e["event"] == "eval"]
        live = {e["threshold"]: e["epochs"] for e in events if e["event"] == "threshold_reached"}
        assert events[0]["threshold_metric"] == row["threshold_metric"] == "balanced_accuracy"
        for threshold, cost in row["thresholds"].items():
            first = next((e for e in evals if e["val_balanced_accuracy"] >= float(threshold)), None)
            assert cost["reached"] == (float(threshold) in live) == (first is not None)
            assert cost["epochs"] == (first or evals[-1])["epochs"] == live.get(float(threshold), cost["epochs"])
            # evaluation's own cost travels with every threshold, reached or censored
            assert cost["eval_flops"] == (first or evals[-1])["eval_flops"] > 0
            assert cost["eval_device_seconds"] == (first or evals[-1])["eval_device_seconds"] > 0
            reached_somewhere += cost["reached"]
    assert reached_somewhere >= len(results)  # 0.2 is below chance: the comparison above was exercised


def test_accuracies_are_exact_from_counts_and_rounded_once():
    confusion = np.array([[150, 0], [90, 60]])  # 210 of 300 right
    predicted_right = torch.tensor([1.0] * 210 + [0.0] * 90)
    assert predicted_right.float().mean().item() < 0.7  # what float32 made of it before
    assert accuracy_scores(confusion) == (0.7, 0.7)  # recalls 1 and 0.4
    # a class absent from the truth does not count in the balanced mean
    assert accuracy_scores(np.array([[8, 2, 0], [1, 1, 0], [0, 0, 0]])) == (0.75, 0.65)
    assert accuracy_scores(np.array([[1, 2], [0, 0]])) == (round(1 / 3, 6), round(1 / 3, 6))


def test_the_winner_is_chosen_on_validation_and_its_export_quotes_its_own_figures(design_run):
    out, results = design_run
    exports = json.loads((out / "export" / "exports.json").read_text())
    assert set(exports) == {"scratch", "fractal", "winner"}
    for name, record in exports.items():
        arm = [r for r in results if name == "winner" or r["variant"] == name]
        chosen = next(r for r in arm if r["best_val_accuracy"] == max(a["best_val_accuracy"] for a in arm))
        assert (record["run"], record["seed"], record["variant"]) == (chosen["run"], chosen["seed"], chosen["variant"])
        assert record["best_val_accuracy"] == chosen["best_val_accuracy"]
        assert record["test_accuracy"] == chosen["test_accuracy"]
        stored = {p.key: p.value for p in onnx.load(str(out / "export" / f"{name}.onnx")).metadata_props}
        assert record["meta"] == stored
        assert stored["best_val_accuracy"] == str(chosen["best_val_accuracy"])
        assert stored["test_accuracy"] == str(chosen["test_accuracy"]) and stored["run_name"] == chosen["run"]


def _strip_new_fields(folder):
    """Make a run directory look as galbench 0.2.0 wrote it (its event logs lack this version's fields)."""
    new = {"threshold_metric", "shared_gpu", "budget", "steps_per_epoch", "total_steps", "evals", "class_weights",
           "sampler", "run", "train_size_label", "replicate", "pretrain_id", "pretrain_cost", "step",
           "val_balanced_accuracy", "test_balanced_accuracy", "test_labels", "test_rows"}
    for log in folder.glob("runs/*/events.jsonl"):
        events = [{k: v for k, v in json.loads(line).items() if k not in new} for line in log.read_text().splitlines()]
        log.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_run_directories_of_the_previous_version_still_load_and_report(design_run, tmp_path):
    from galbench.analysis.report import load_report

    out, results = design_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    _strip_new_fields(old)
    row = results_from_events([json.loads(line) for line in (old / "runs/scratch__seed0/events.jsonl")
                              .read_text().splitlines()], [0.2, 0.4, 0.5])
    assert row["finished"] and row["threshold_metric"] == "accuracy" and row["test_accuracy"] == results[0]["test_accuracy"]
    assert row["test_rows"] is row["test_balanced_accuracy"] is row["replicate"] is row["pretrain_id"] is None
    assert all(point["val_balanced_accuracy"] is None for point in row["curve"])
    report = load_report(old)
    assert [(r["variant"], r["seed"], r["test_accuracy"]) for r in report.runs] == \
           [(r["variant"], r["seed"], r["test_accuracy"]) for r in results]


def test_an_interrupted_run_of_the_previous_version_resumes(cli, tmp_path, monkeypatch):
    from galbench.experiment import executors

    path = write_suite(tmp_path, seeds=1, epochs=2)
    suite, base = load_suite(path)
    real_run = executors.train_run

    def stop_in_epoch_two(spec, *args, **kwargs):
        def on_event(event):
            if event["event"] == "eval" and event["epochs"] == 1.5:
                raise KeyboardInterrupt
        return real_run(spec, *args, on_event=on_event, on_checkpoint=kwargs.get("on_checkpoint"))

    monkeypatch.setattr(executors, "train_run", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, base, out=tmp_path / "out")
    monkeypatch.setattr(executors, "train_run", real_run)
    run_dir = tmp_path / "out" / "runs" / "scratch__seed0"
    last = torch.load(run_dir / "last.pt", weights_only=True)
    del last["step"]  # 0.2.0 checkpoints count epochs only
    torch.save(last, run_dir / "last.pt")
    _strip_new_fields(tmp_path / "out")
    assert cli("run", path, "--out", tmp_path / "out", "--no-report")[0] == 0
    events = _events(tmp_path / "out", "scratch__seed0")
    assert [e["event"] for e in events].count("run_start") == 1
    assert any(e["event"] == "run_resume" and e["epoch"] == 1 and e["step"] == -(-events[0]["train_size"] // 16)
               for e in events)
    assert [e["epochs"] for e in events if e["event"] == "eval"] == [0.5, 1.0, 1.5, 2.0]


def test_the_best_checkpoint_is_chosen_by_the_thresholds_metric(design_run):
    """With balanced-accuracy thresholds, best.pt is the evaluation with the best balanced accuracy."""
    _, results = design_run
    for row in results:
        best = max(point["val_balanced_accuracy"] for point in row["curve"])
        assert row["best_val_score"] == row["best_val_balanced_accuracy"] == best
        first = next(p for p in row["curve"] if p["val_balanced_accuracy"] == best)  # the first to reach it
        assert row["best_val_accuracy"] == first["val_accuracy"]


def test_export_data_of_a_per_seed_run_is_the_checkpoints_own_seeds_split(design_run):
    from galbench.errors import GalbenchError
    from galbench.inference import exportdata

    out, _ = design_run
    split = json.loads((out / "split.json").read_text())
    catalog = read_catalog(json.loads((out / "suite.resolved.json").read_text())["catalog_path"])
    for seed in ("0", "2"):
        checkpoint = load_checkpoint(out / "runs" / f"scratch__seed{seed}" / "best.pt")
        data = exportdata.from_run(out, checkpoint, 4, training_images=True)
        rows = split["seeds"][seed]
        np.testing.assert_array_equal(data.val_images, catalog.images[rows["val"]])
        np.testing.assert_array_equal(data.val_labels, catalog.labels[rows["val"]])
        np.testing.assert_array_equal(data.train_images, catalog.images[rows["train"]])
    checkpoint["meta"]["seed"] = 7  # a checkpoint of a seed this run directory never ran
    with pytest.raises(GalbenchError, match="no split for the checkpoint's seed 7"):
        exportdata.from_run(out, checkpoint, 4, training_images=False)
    assert exportdata.from_run(out, load_checkpoint(out / "runs" / "scratch__seed1" / "best.pt"), 4,
                               training_images=False).train_images is None
