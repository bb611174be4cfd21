"""Splits larger than the memory budget stream from the memory-mapped file with the same results."""

from __future__ import annotations

import json

from tests.conftest import write_suite


def _evals(run_dir):
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [(e["epochs"], e["val_accuracy"], e["val_loss"]) for e in map(json.loads, lines) if e["event"] == "eval"]


def test_streamed_training_equals_resident_training(cli, tmp_path):
    data = 'synth = { n = 300, size = 64, seed = 0, classes = "elliptical,spiral,edge-on" }'
    suite = write_suite(tmp_path, seeds=1, epochs=2, data=data)
    assert cli("run", suite, "--out", tmp_path / "resident", "--no-report")[0] == 0
    # 180 training images of 12 KB do not fit 1 MB: every split streams in chunks from the file
    assert cli("run", suite, "--out", tmp_path / "streamed", "--no-report", "--set", "data.memory_budget_mb=1")[0] == 0
    resident, streamed = (_evals(tmp_path / d / "runs/scratch__seed0") for d in ("resident", "streamed"))
    assert resident == streamed and len(resident) == 4
    results = [json.loads((tmp_path / d / "results.json").read_text())["runs"][0] for d in ("resident", "streamed")]
    assert results[0]["test_accuracy"] == results[1]["test_accuracy"]


def test_split_images_streams_when_over_budget():
    import numpy as np
    import torch

    from galbench.data.tensors import SplitImages

    images = np.random.default_rng(0).integers(0, 255, (100, 3, 64, 64), dtype=np.uint8)
    labels = np.arange(100) % 3
    rows = np.arange(10, 90)
    streamed = SplitImages.build(images, rows, labels, 1.0, 64, torch.device("cpu"), budget_bytes=10_000)
    resident = SplitImages.build(images, rows, labels, 1.0, 64, torch.device("cpu"), budget_bytes=10**9)
    assert streamed.resident is None and resident.resident is not None
    order = torch.randperm(80, generator=torch.Generator().manual_seed(0))
    for (a, la), (b, lb) in zip(streamed.batches(16, order), resident.batches(16, order), strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
