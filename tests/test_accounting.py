"""Cost accounting: FLOPs per sample, threshold crossings and censoring, cost arithmetic in a real run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from galbench.experiment.accounting import flops_per_sample, threshold_crossings
from galbench.models.registry import build_model


def test_flop_counter_matches_hand_count_for_a_linear_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 10))
    forward = 2 * 3 * 64 * 64 * 10
    assert flops_per_sample(model, 64, torch.device("cpu"), backward=False) == forward
    # backward: gradients for the weights (2*in*out); none for the input image
    assert flops_per_sample(model, 64, torch.device("cpu"), backward=True) == 2 * forward


def test_alexnet_forward_flops_at_224_match_the_published_figure():
    # torchvision lists AlexNet at 0.714 GFLOPS (multiply-adds) per 224 px image; FlopCounter counts 2 per MAC
    flops = flops_per_sample(build_model("alexnet", 1000), 224, torch.device("cpu"), backward=False)
    assert flops / 2 / 1e9 == pytest.approx(0.714, abs=0.005)


def _evals(accuracies):
    return [{"val_accuracy": a, "epochs": 0.5 * (k + 1), "samples": 100 * (k + 1), "train_flops": 1000 * (k + 1),
             "device_seconds": 2.0 * (k + 1), "energy_joules": None} for k, a in enumerate(accuracies)]


def test_first_crossing_and_censoring_at_totals():
    result = threshold_crossings(_evals([0.3, 0.72, 0.65, 0.81]), [0.7, 0.8, 0.9])
    assert result[0.7]["reached"] and result[0.7]["epochs"] == 1.0 and result[0.7]["samples"] == 200
    assert result[0.8]["reached"] and result[0.8]["train_flops"] == 4000
    assert not result[0.9]["reached"] and result[0.9]["epochs"] == 2.0 and result[0.9]["device_seconds"] == 8.0


def test_threshold_reached_exactly_counts():
    assert threshold_crossings(_evals([0.5, 0.8]), [0.8])[0.8]["epochs"] == 1.0


def test_no_evals_is_censored_at_zero():
    assert threshold_crossings([], [0.5])[0.5] == {"reached": False, "epochs": 0, "samples": 0, "train_flops": 0,
                                                   "eval_flops": 0, "device_seconds": 0, "eval_device_seconds": 0,
                                                   "wall_seconds": 0, "energy_joules": 0}


def test_run_costs_add_up(cli, tmp_path):
    from tests.conftest import write_suite

    out = tmp_path / "out"
    assert cli("run", write_suite(tmp_path, seeds=1, epochs=2), "--out", out)[0] == 0
    events = [json.loads(line) for line in (out / "runs/scratch__seed0/events.jsonl").read_text().splitlines()]
    start = events[0]
    evals = [e for e in events if e["event"] == "eval"]
    assert start["event"] == "run_start" and events[-1]["event"] == "run_stop"
    assert [e["epochs"] for e in evals] == [0.5, 1.0, 1.5, 2.0]
    train_size, val_size = start["train_size"], start["val_size"]
    assert evals[-1]["samples"] == 2 * train_size
    assert evals[-1]["train_flops"] == evals[-1]["samples"] * start["train_flops_per_sample"]
    assert evals[-1]["eval_flops"] == 4 * val_size * start["eval_flops_per_sample"]
    assert all(b["device_seconds"] > a["device_seconds"] for a, b in zip(evals, evals[1:], strict=False))
    assert evals[-1]["energy_joules"] is None  # no GPU here: unknown, not zero
    results = json.loads((out / "results.json").read_text())["runs"][0]
    for threshold, cost in results["thresholds"].items():
        first = next((e for e in evals if e["val_accuracy"] >= float(threshold)), None)
        assert cost["reached"] == (first is not None)
        assert cost["epochs"] == (first or evals[-1])["epochs"]
    assert sum(map(sum, results["confusion"])) == events[0]["test_size"]
