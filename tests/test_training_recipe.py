"""Recipe options: class-weighted loss, class-balanced sampling, the one-cycle schedule, warm-up and decay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from galbench.data.tensors import SplitImages, balanced_class_weights, balanced_order
from galbench.experiment.suite import AugmentSection, TrainSection
from galbench.experiment.train import RunSpec, Trainer, lr_at
from tests.conftest import make_catalog


def test_balanced_class_weights_equal_a_hand_computation():
    labels = np.array([0] * 6 + [1] * 3 + [3] * 1)  # class 2 absent
    # N / (K n_c) with N = 10 galaxies and K = 3 classes present
    assert balanced_class_weights(labels, 4).tolist() == pytest.approx([10 / 18, 10 / 9, 0.0, 10 / 3])
    # the weighted loss is then sum_i w_{y_i} l_i / sum_i w_{y_i}: every present class carries the same weight
    weights = balanced_class_weights(labels, 4)
    assert [weights[labels][labels == c].sum() for c in (0, 1, 3)] == pytest.approx([10 / 3] * 3)


def _trainer(tmp_path, labels, **train):
    catalog = make_catalog(n=len(labels), size=64, seed=2)
    split = SplitImages.build(catalog.images, np.arange(len(labels)), np.asarray(labels), 1.0, 64,
                              torch.device("cpu"), 2**30)
    spec = RunSpec("v", 0, "alexnet-tiny", ["a", "b", "c"], TrainSection(device="cpu", **train), AugmentSection(),
                   64, 1.0, [])
    return Trainer(spec, split, split, tmp_path, None)


def test_the_trainer_weights_its_loss_by_the_runs_own_training_set(tmp_path):
    trainer = _trainer(tmp_path, [0] * 8 + [1] * 3 + [2] * 1, class_weights="balanced")
    assert trainer.criterion.weight.tolist() == pytest.approx([12 / 24, 12 / 9, 12 / 3])
    assert _trainer(tmp_path, [0, 1, 2]).criterion.weight is None


def test_balanced_sampling_draws_every_class_about_equally_and_is_seeded():
    labels = torch.as_tensor([0] * 900 + [1] * 90 + [2] * 10)
    generator = torch.Generator().manual_seed(3)
    draws = torch.cat([balanced_order(labels, generator) for _ in range(30)])  # 30 epochs of 1,000 draws
    shares = torch.bincount(labels[draws], minlength=3) / draws.numel()
    # each share is 1/3 with a binomial standard error of sqrt(2/9 / 30000) = 0.0027
    assert shares.tolist() == pytest.approx([1 / 3] * 3, abs=0.015)
    state = generator.get_state()
    again = torch.Generator()
    again.set_state(state)
    assert torch.equal(balanced_order(labels, generator), balanced_order(labels, again))  # resumable from its state


def test_the_trainer_samples_balanced_epochs_of_the_training_set_size(tmp_path):
    trainer = _trainer(tmp_path, [0] * 20 + [1] * 2 + [2] * 2, sampler="balanced")
    order = torch.cat([trainer._epoch_order() for _ in range(200)])
    assert order.numel() == 200 * 24
    shares = torch.bincount(trainer.train_split.labels[order], minlength=3) / order.numel()
    assert shares.tolist() == pytest.approx([1 / 3] * 3, abs=0.03)


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 10, 97, 400])
def test_onecycle_matches_torchs_one_cycle_lr_step_by_step(steps):
    cfg = TrainSection(schedule="onecycle", lr=0.02, steps=steps)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.02, total_steps=steps, cycle_momentum=False)
    expected = []
    for _ in range(steps):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert [lr_at(step, steps, 5, cfg) for step in range(steps)] == pytest.approx(expected, rel=1e-12)
    if steps >= 10:
        assert max(expected) == pytest.approx(0.02, rel=0.05) and expected[0] == pytest.approx(0.02 / 25)


def test_warmup_then_cosine_and_step_decay_by_hand():
    cfg = TrainSection(lr=0.1, warmup_epochs=1, schedule="cosine", epochs=3)
    # 4 steps per epoch: warm-up over steps 0-3, then cosine over the remaining 8
    assert [lr_at(s, 12, 4, cfg) for s in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lr_at(4, 12, 4, cfg) == pytest.approx(0.1)
    assert lr_at(8, 12, 4, cfg) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    step = TrainSection(lr=0.1, schedule="step", steps=100)
    assert [lr_at(s, 100, 7, step) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
