"""A galbench Trainer on a tiny random catalog, for tests that train a model a few steps on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from galbench.data.tensors import SplitImages
from galbench.experiment.suite import AugmentSection, TrainSection
from galbench.experiment.train import RunSpec, Trainer
from tests.conftest import make_catalog


def tiny_trainer(model: str, run_dir: Path, size: int, finetune: str = "all",
                 init_state: dict[str, torch.Tensor] | None = None, **train) -> Trainer:
    """16 training images in batches of 8 (2 steps an epoch) and 8 validation images, 3 classes."""
    catalog = make_catalog(n=24, size=size)
    rows = np.arange(len(catalog))
    splits = [SplitImages.build(catalog.images, part, catalog.labels, 1.0, size, torch.device("cpu"), 2**30)
              for part in (rows[:16], rows[16:])]
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainSection(optimizer="adamw", lr=1e-3, batch_size=8, epochs=1, evals_per_epoch=1, device="cpu", **train)
    spec = RunSpec(variant="v", seed=0, model=model, classes=catalog.classes, train=cfg, augment=AugmentSection(),
                   image_size=size, crop=1.0, thresholds=[0.5], finetune=finetune, init_state=init_state,
                   init="scratch" if init_state is None else "pretrained")
    return Trainer(spec, *splits, run_dir, None)
