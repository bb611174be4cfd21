"""Checkpoints at paper scale: written in the background from CPU copies, best.pt at most once per checkpoint
and weights only, `train.checkpoint_every` in epochs or seconds, the last epoch always checkpointed."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import galbench.experiment.train as train
from galbench.data.tensors import SplitImages
from galbench.experiment.suite import AugmentSection, TrainSection
from galbench.models.weights import load_checkpoint
from tests.conftest import make_catalog


def _spec(epochs=2, evals_per_epoch=3, **train_keys) -> train.RunSpec:
    cfg = TrainSection(optimizer="adamw", lr=0.003, batch_size=8, epochs=epochs, evals_per_epoch=evals_per_epoch,
                       device="cpu", **train_keys)
    return train.RunSpec(variant="v", seed=0, model="alexnet-tiny", classes=["a", "b", "c"], train=cfg,
                         augment=AugmentSection(), image_size=64, crop=1.0, thresholds=[0.5])


@pytest.fixture(scope="module")
def splits():
    catalog = make_catalog(n=36, size=64)
    rows = np.arange(36)
    labels = catalog.labels

    def split(index):
        return SplitImages.build(catalog.images, rows[index], labels, 1.0, 64, torch.device("cpu"), 2**30)

    return split(rows % 3 != 0), split(rows % 3 == 0), split(rows % 3 == 0)


@pytest.fixture
def writes(monkeypatch):
    """Every checkpoint written: (file name, epoch of last.pt or None, thread name)."""
    real = train.save_checkpoint
    seen = []

    def recording(checkpoint, path):
        seen.append((path.name, checkpoint.get("epoch"), threading.current_thread().name))
        real(checkpoint, path)

    monkeypatch.setattr(train, "save_checkpoint", recording)
    return seen


def test_best_is_written_at_most_once_per_epoch_as_weights_only(splits, tmp_path, writes):
    result = train.run(_spec(epochs=3, evals_per_epoch=4), *splits, tmp_path)
    names = [name for name, _, _ in writes]
    assert names.count("last.pt") == 2 and names.count("final.pt") == 1 and 1 <= names.count("best.pt") <= 3
    assert all(thread == "galbench-checkpoint" for _, _, thread in writes)  # never in the training thread
    best = load_checkpoint(tmp_path / "best.pt")
    assert "optimizer" not in best and "rng" not in best
    evals = result["curve"]
    best_accuracy = max(e["val_accuracy"] for e in evals)
    first_best = next(e["epochs"] for e in evals if e["val_accuracy"] == best_accuracy)
    assert best["meta"]["val_accuracy"] == pytest.approx(best_accuracy, abs=1e-6)
    assert best["meta"]["epochs"] == first_best
    assert (tmp_path / "final.pt").exists() and not (tmp_path / "last.pt").exists()


def test_best_weights_are_those_of_the_best_evaluation(splits, tmp_path):
    """The weights in best.pt give the recorded validation accuracy again: the copy was taken at that eval."""
    train.run(_spec(epochs=2, evals_per_epoch=3), *splits, tmp_path)
    best = load_checkpoint(tmp_path / "best.pt")
    model = train.build_model("alexnet-tiny", 3)
    model.load_state_dict(best["state_dict"])
    accuracy = train.evaluate(model, splits[1], train.Normalizer(), 256, "fp32", False).accuracy
    assert accuracy == pytest.approx(best["meta"]["val_accuracy"], abs=1e-6)


@pytest.mark.parametrize(("every", "expected_epochs"), [(2, [2, 4]), ("3600s", []), (1, [1, 2, 3, 4])])
def test_checkpoint_every_epochs_or_seconds_and_always_the_last_epoch(splits, tmp_path, writes, every,
                                                                      expected_epochs):
    train.run(_spec(epochs=5, evals_per_epoch=1, checkpoint_every=every), *splits, tmp_path)
    assert [epoch for name, epoch, _ in writes if name == "last.pt"] == expected_epochs
    # the last epoch's weights, without the optimizer's state: nothing resumes from a finished run
    assert [name for name, _, _ in writes].count("final.pt") == 1
    final = load_checkpoint(tmp_path / "final.pt")
    assert final["meta"]["epochs"] == 5 and "optimizer" not in final


def test_the_snapshot_is_a_copy_that_later_steps_cannot_change():
    weights = torch.ones(4)
    state = {"w": weights, "nested": [weights, (weights, 3)], "step": 7}
    snapshot = train.cpu_copy(state)
    weights.add_(1)
    assert snapshot["w"].tolist() == [1.0] * 4 and snapshot["nested"][1][0].tolist() == [1.0] * 4
    assert snapshot["step"] == 7 and isinstance(snapshot["nested"][1], tuple)


def test_the_next_epoch_trains_while_the_previous_checkpoint_is_written(splits, tmp_path, monkeypatch):
    """A slow disk does not hold training up: epoch 2 trains while epoch 1's checkpoint is still being written."""
    real = train.save_checkpoint
    log = []

    def slow(checkpoint, path):
        log.append(("write starts", path.name, checkpoint.get("epoch")))
        time.sleep(1.5)
        real(checkpoint, path)
        log.append(("write ends", path.name, checkpoint.get("epoch")))

    monkeypatch.setattr(train, "save_checkpoint", slow)
    events = []
    train.run(_spec(epochs=2, evals_per_epoch=1), *splits, tmp_path,
              on_event=lambda event: events.append(event["epochs"]) or log.append(("eval", event["epochs"])))
    first_write_end = log.index(("write ends", "last.pt", 1))
    assert log.index(("eval", 2.0)) < first_write_end  # epoch 2 was evaluated before epoch 1's write ended


def test_a_failed_background_write_stops_the_run_with_its_error(splits, tmp_path, monkeypatch):
    def broken(checkpoint, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train.torch, "save", broken)
    with pytest.raises(train.GalbenchError, match="no space left on device"):
        train.run(_spec(epochs=2, evals_per_epoch=1), *splits, tmp_path)
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob(".*.tmp"))
