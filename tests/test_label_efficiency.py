"""Label efficiency: nested stratified subsets, a (variant, size, seed) grid that resumes, step budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from galbench.data.tensors import SplitImages, nested_order, train_subset
from galbench.errors import GalbenchError
from galbench.experiment import executors
from galbench.experiment.runner import SuiteData, run_suite
from galbench.experiment.suite import AugmentSection, TrainSection, load_suite
from galbench.experiment.train import RunSpec, eval_steps, run, total_steps
from tests.conftest import make_catalog, write_suite

LABELS = np.repeat([0, 1, 2], [700, 200, 100])  # imbalanced, as real catalogs are


def test_subsets_are_nested_and_stratified_within_one_galaxy():
    labels = np.random.default_rng(5).permutation(LABELS)
    sizes = [3, 10, 37, 100, 400, 1000]
    subsets = [train_subset(labels, size, False, [0, 7]) for size in sizes]
    for size, subset in zip(sizes, subsets, strict=True):
        assert subset.size == size == np.unique(subset).size
        share = size * np.array([0.7, 0.2, 0.1])
        counts = np.bincount(labels[subset], minlength=3)
        assert (np.floor(share) <= counts).all() and (counts <= np.ceil(share)).all()  # both quotas
    for small, large in zip(subsets, subsets[1:], strict=False):
        assert np.isin(small, large).all()  # nested
    np.testing.assert_array_equal(subsets[2], train_subset(labels, 37, False, [0, 7]))  # same seed, same galaxies
    assert not np.array_equal(subsets[2], train_subset(labels, 37, False, [1, 7]))
    np.testing.assert_array_equal(train_subset(labels, "all", False, [0, 7]), np.arange(labels.size))


def test_every_prefix_of_the_nested_order_meets_both_quotas_for_any_class_sizes():
    rng = np.random.default_rng(11)
    for _ in range(150):
        counts = rng.integers(1, 40, rng.integers(2, 7)) * rng.integers(1, 4)
        labels = rng.permutation(np.repeat(np.arange(counts.size), counts))
        order = nested_order(labels, labels.size, [int(rng.integers(1000))])
        assert sorted(order) == list(range(labels.size))
        taken = np.cumsum(np.eye(counts.size, dtype=int)[labels[order]], axis=0)  # class counts of every prefix
        share = np.arange(1, labels.size + 1)[:, None] * counts / labels.size
        assert (np.abs(taken - share) < 1).all()


def test_per_class_subsets_have_exact_counts_and_are_nested():
    labels = np.random.default_rng(1).permutation(LABELS)
    five, twenty = (train_subset(labels, n, True, [3]) for n in (5, 20))
    assert np.bincount(labels[five]).tolist() == [5, 5, 5] and np.bincount(labels[twenty]).tolist() == [20, 20, 20]
    assert np.isin(five, twenty).all()


@pytest.mark.parametrize(("size", "per_class", "expected"), [
    (1001, False, "train size 1001 is more than the training split holds (1000 galaxies)"),
    (101, True, "train size 101 per class is more than the training split holds of class 2 (100 galaxies)"),
])
def test_impossible_sizes_are_refused_with_one_line(size, per_class, expected):
    with pytest.raises(GalbenchError, match="suite.train_sizes") as info:
        train_subset(LABELS, size, per_class, [0])
    assert expected in str(info.value)


def test_a_size_larger_than_the_training_split_stops_the_run_before_any_training(cli, tmp_path):
    path = write_suite(tmp_path, seeds=1, epochs=1)
    code, _, err = cli("run", path, "--out", tmp_path / "out", "--set", "suite.train_sizes=[60]")
    assert code == 2 and "train size 60 is more than the training split holds (54 galaxies)" in err
    assert not (tmp_path / "out" / "runs").exists()


def test_step_budget_and_evaluation_grid():
    steps = TrainSection(steps=100, evals=4, batch_size=16)
    assert total_steps(steps, 1) == 100 == total_steps(steps, 50)  # the same number of updates at every size
    assert sorted(eval_steps(steps, 1)) == [25, 50, 75, 100] == sorted(eval_steps(steps, 50))
    assert sorted(eval_steps(TrainSection(steps=3, evals=10), 7)) == [1, 2, 3]  # never more evals than steps
    epochs = TrainSection(epochs=3, evals_per_epoch=2)
    assert total_steps(epochs, 5) == 15
    # per epoch at round(5 k / 2) = 2 and 5 steps into each epoch, as before steps existed
    assert sorted(eval_steps(epochs, 5)) == [2, 5, 7, 10, 12, 15]
    assert sorted(eval_steps(TrainSection(epochs=3, evals=2), 5)) == [8, 15]
    assert TrainSection().budget() == {"epochs": 10, "evals_per_epoch": 1}
    assert TrainSection(steps=50).budget() == {"steps": 50, "evals": 10}


def _suite(tmp_path, *overrides):
    extra = '\n[[variant]]\nname = "slow"\nmodel = "alexnet-tiny"\ninit = "scratch"\ntrain = { lr = 0.0005 }\n'
    path = write_suite(tmp_path, seeds=1, epochs=1, extra=extra)
    return load_suite(path, ["suite.train_sizes=[15, 6, 'all']", "train.steps=4", "train.evals=2", *overrides])


def test_a_size_grid_runs_every_variant_size_and_seed_and_resumes_mid_grid(tmp_path, monkeypatch):
    suite, base = _suite(tmp_path)
    out = tmp_path / "out"
    trained = []
    real_run = executors.train_run

    def interrupted(spec, *args, **kwargs):
        if len(trained) == 3:
            raise KeyboardInterrupt  # as Ctrl-C between two runs
        trained.append(spec.meta["run"])
        return real_run(spec, *args, **kwargs)

    monkeypatch.setattr(executors, "train_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, base, out=out)
    # seed-major, smallest size first, both arms at a size before the next size
    assert trained == ["scratch__n6__seed0", "slow__n6__seed0", "scratch__n15__seed0"]
    logs = {name: (out / "runs" / name / "events.jsonl").read_bytes() for name in trained}

    rerun = []

    def recorded(spec, *args, **kwargs):
        rerun.append(spec.meta["run"])
        return real_run(spec, *args, **kwargs)

    monkeypatch.setattr(executors, "train_run", recorded)
    _, results = run_suite(suite, base, out=out)
    assert rerun == ["slow__n15__seed0", "scratch__nall__seed0", "slow__nall__seed0"]  # only the rest trained
    assert all((out / "runs" / name / "events.jsonl").read_bytes() == log for name, log in logs.items())

    assert [(r["variant"], r["train_size_label"], r["train_size"]) for r in results] == [
        ("scratch", "6", 6), ("scratch", "15", 15), ("scratch", "all", 54),
        ("slow", "6", 6), ("slow", "15", 15), ("slow", "all", 54)]
    split = json.loads((out / "split.json").read_text())
    six, fifteen = (set(split["train_sizes"][label]["rows"]) for label in ("6", "15"))
    assert six < fifteen < set(split["train"]) and split["train_sizes"]["15"]["count"] == 15
    # validation and test never change with the size
    assert all(r["test_rows"] == split["test"] for r in results)
    for result in results:
        events = [json.loads(line) for line in (out / "runs" / result["run"] / "events.jsonl").read_text().splitlines()]
        start, evals = events[0], [e for e in events if e["event"] == "eval"]
        assert start["val_size"] == len(split["val"]) and start["total_steps"] == 4
        steps_per_epoch = -(-result["train_size"] // 16)
        assert [e["step"] for e in evals] == [2, 4]
        assert [e["epochs"] for e in evals] == [2 / steps_per_epoch, 4 / steps_per_epoch]
        assert evals[-1]["samples"] == sum(min(16, result["train_size"] - 16 * (k % steps_per_epoch))
                                           for k in range(4))


def test_every_arm_at_a_size_trains_on_the_galaxies_split_json_names(tmp_path):
    suite, base = _suite(tmp_path, "data.split.per_seed=true", "suite.seeds=[0, 4]")

    data = SuiteData(suite, suite.catalog_file(base), torch.device("cpu"))
    record = data.record()
    for seed in (0, 4):
        key = data.split_key(seed)
        train, val, test = data.for_run(key, "6")
        assert train.rows_in_catalog.tolist() == record["seeds"][str(seed)]["train_sizes"]["6"]["rows"]
        assert test.rows_in_catalog.tolist() == record["seeds"][str(seed)]["test"]
        # the subset's prepared images are the full split's images at those rows
        full = data.for_run(key, None)[0]
        where = np.searchsorted(full.rows_in_catalog, train.rows_in_catalog)
        assert torch.equal(train.all_images(), full.all_images()[torch.as_tensor(where)])
        assert torch.equal(train.labels, full.labels[torch.as_tensor(where)])
    assert record["seeds"]["0"]["test"] != record["seeds"]["4"]["test"]


def _tiny_run(tmp_path, name, on_event=None):
    catalog = make_catalog(n=24, size=64, seed=3)
    rows = np.arange(24)
    split = SplitImages.build(catalog.images, rows[:6], catalog.labels, 1.0, 64, torch.device("cpu"), 2**30)
    val = SplitImages.build(catalog.images, rows[6:], catalog.labels, 1.0, 64, torch.device("cpu"), 2**30)
    spec = RunSpec(variant="v", seed=0, model="alexnet-tiny", classes=catalog.classes,
                   train=TrainSection(optimizer="adamw", lr=1e-3, batch_size=16, steps=6, evals=3, device="cpu"),
                   augment=AugmentSection(), image_size=64, crop=1.0, thresholds=[0.5])
    return run(spec, split, val, val, tmp_path / name, on_event=on_event)


def test_a_step_budget_run_interrupted_between_checkpoints_resumes_exactly(tmp_path):
    whole = _tiny_run(tmp_path, "whole")

    def stop_at_the_last_eval(event):
        if event["event"] == "eval" and event["step"] == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tiny_run(tmp_path, "cut", stop_at_the_last_eval)
    # 6 one-step epochs, evaluations after steps 2, 4, 6: checkpoints only after the epochs that evaluated
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["step"] == 4
    resumed = _tiny_run(tmp_path, "cut")
    keys = ("epochs", "samples", "train_flops", "val_accuracy", "val_loss")
    assert [[p[k] for k in keys] for p in resumed["curve"]] == [[p[k] for k in keys] for p in whole["curve"]]
    assert [p["epochs"] for p in whole["curve"]] == [2.0, 4.0, 6.0]
    assert resumed["test_predictions"] == whole["test_predictions"]


def test_every_training_step_is_billed_when_evaluations_fall_mid_epoch(tmp_path, monkeypatch):
    """A step budget on a small subset spreads few evaluations over many short epochs: the steps after an
    epoch's last evaluation count too. A fake clock advances one second per training step and never otherwise,
    so the device-seconds must equal the number of steps exactly."""
    from galbench.experiment import accounting, train

    clock = [0.0]
    real_augment = train.augment

    def stepping_augment(*args, **kwargs):  # called once per training step, never in evaluation
        clock[0] += 1.0
        return real_augment(*args, **kwargs)

    monkeypatch.setattr(train, "augment", stepping_augment)
    monkeypatch.setattr(accounting.Stopwatch, "now", lambda self: clock[0])
    suite, base = _suite(tmp_path, "suite.train_sizes=[6]", "train.steps=9", "train.evals=2", "train.batch_size=3")
    _, results = run_suite(suite, base, out=tmp_path / "out")
    assert len(results) == 2
    for row in results:
        assert row["totals"]["samples"] == 9 * 3 and row["totals"]["epochs"] == 4.5  # 2 steps an epoch
        assert row["totals"]["device_seconds"] == 9.0 and row["totals"]["eval_device_seconds"] == 0.0
        # cumulative at each evaluation: one second per step taken by then
        assert [p["device_seconds"] for p in row["curve"]] == [p["samples"] / 3 for p in row["curve"]]
