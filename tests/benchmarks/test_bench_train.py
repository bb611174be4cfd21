"""Training and evaluation: galbench's loop against a bare PyTorch loop on the same model, batch and device."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from galbench.data import Normalizer, SplitImages, augment
from galbench.models import build_model
from galbench.suite import AugmentSection, TrainSection
from galbench.train import RunSpec, Trainer, evaluate
from tests.benchmarks.conftest import record

BATCH = 64
MODEL = "alexnet-small"
MIN_RATIO_CPU, MIN_RATIO_GPU = 0.9, 0.95


def _device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _split(catalog, device):
    rows = np.arange(len(catalog))
    return SplitImages.build(catalog.images, rows, catalog.labels, 1.0, 64, device, 2**31)


def _trainer(catalog, tmp_path):
    device = _device()
    split = _split(catalog, device)
    spec = RunSpec(variant="bench", seed=0, model=MODEL, classes=catalog.classes,
                   train=TrainSection(optimizer="adamw", lr=1e-3, batch_size=BATCH, epochs=1000, device=str(device)),
                   augment=AugmentSection(), image_size=64, crop=1.0, thresholds=[])
    trainer = Trainer(spec, split, split, tmp_path, None)
    trainer._eval_point = lambda step: None  # training throughput only: evaluation is benchmarked on its own
    trainer.begin_session()
    return trainer, split


def _bare_loop(split, device, augmented: bool):
    """The plainest loop that feeds the same model the same kind of batches: index, (augment,) normalise, step.

    With `augmented`, it transforms each batch with the same augmentation galbench applies (flips, turns,
    shifts), so the two loops do the same arithmetic and the ratio is galbench's own overhead; without, the
    ratio also charges galbench for its augmentation.
    """
    torch.manual_seed(0)
    model = build_model(MODEL, 3).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    normalizer = Normalizer().to(device)
    images, labels = split.resident, split.labels
    generator = torch.Generator(device=device).manual_seed(1)
    policy = AugmentSection()

    def epoch():
        order = torch.randperm(len(labels), device=device)
        for start in range(0, len(labels), BATCH):
            index = order[start:start + BATCH]
            batch = images[index]
            if augmented:
                batch = augment(batch, generator, policy.flips, policy.rot90, policy.shift)
            loss = F.cross_entropy(model(normalizer(batch)), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return epoch


def _interleaved_medians(*workloads, rounds=15):
    """Median seconds of workloads timed in turn, round after round, so drifts of the machine hit all alike."""
    times = [[] for _ in workloads]
    for _ in range(rounds):
        for fn, bucket in zip(workloads, times, strict=True):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def test_training_loop_against_bare_loop(benchmark, sim_images, tmp_path):
    device = _device()
    trainer, split = _trainer(sim_images, tmp_path)
    bare, bare_unaugmented = _bare_loop(split, device, augmented=True), _bare_loop(split, device, augmented=False)
    for warm_up in (bare, bare_unaugmented, trainer.train_one_epoch):
        warm_up()
    bare_seconds, unaugmented_seconds, galbench_seconds = _interleaved_medians(bare, bare_unaugmented,
                                                                                trainer.train_one_epoch)
    ratio = bare_seconds / galbench_seconds
    benchmark.group = "training epoch (600 galaxies, 64 px)"
    benchmark.pedantic(trainer.train_one_epoch, rounds=3, iterations=1)
    record(benchmark, images_per_second=len(split) / galbench_seconds, bare_images_per_second=len(split) / bare_seconds,
           ratio_to_bare=ratio, bare_unaugmented_images_per_second=len(split) / unaugmented_seconds,
           ratio_to_unaugmented_bare=unaugmented_seconds / galbench_seconds,
           flops_per_second=trainer.train_flops * len(split) / galbench_seconds)
    assert ratio >= (MIN_RATIO_GPU if device.type == "cuda" else MIN_RATIO_CPU), ratio


def test_evaluation(benchmark, sim_images):
    device = _device()
    split = _split(sim_images, device)
    model = build_model(MODEL, 3).to(device)
    normalizer = Normalizer().to(device)
    benchmark.group = "evaluation (600 galaxies, 64 px)"
    benchmark.pedantic(evaluate, args=(model, split, normalizer, 256, "fp32", False), rounds=5, iterations=1,
                       warmup_rounds=1)
    record(benchmark, images_per_second=len(split) / benchmark.stats.stats.median)
