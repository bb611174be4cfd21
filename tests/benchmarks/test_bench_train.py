"""Training and evaluation: galbench's loop against a bare PyTorch loop on the same model, batch and device."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from galbench.bench import bare_loop
from galbench.data.tensors import Normalizer, SplitImages
from galbench.experiment.suite import AugmentSection, TrainSection
from galbench.experiment.train import RunSpec, Trainer, evaluate
from galbench.models.registry import build_model
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
    # the plainest loop with the same settings, over batches augmented as galbench's are, and not augmented
    bare = bare_loop(split, MODEL, len(sim_images.classes), trainer.cfg, trainer.spec.augment)
    bare_unaugmented = bare_loop(split, MODEL, len(sim_images.classes), trainer.cfg, None)
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
