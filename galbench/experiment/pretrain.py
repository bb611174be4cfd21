"""Pretraining sources that work offline: fractals (FractalDB-style) and other galaxy catalogs.

A pretraining is one ordinary galbench training run on the source data, so it has the same accounting,
event log and resume. Its checkpoint carries its cost in `meta.pretrain_cost` (samples, FLOPs,
device-seconds, energy, wall seconds, and the seconds spent generating the data), which `galbench run`
reports both on its own and spread over the runs that used it. Results are cached by a hash of
everything that made them, so every seed of a suite, and every later suite, reuses one pretraining.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from galbench.data.catalog import Catalog, read_catalog
from galbench.data.fractal import FractalParams, generate
from galbench.data.synth import cached_synth_catalog
from galbench.data.tensors import SplitImages, stratified_split
from galbench.errors import GalbenchError
from galbench.experiment.suite import (
    AugmentSection,
    FractalSection,
    PretrainedSection,
    Suite,
    TrainSection,
    Variant,
)
from galbench.experiment.train import RunSpec, save_checkpoint
from galbench.experiment.train import run as train_run
from galbench.fileio import cache_dir, content_hash, exclusive_lock
from galbench.models.registry import build_model
from galbench.models.weights import load_checkpoint

PRETRAIN_SPLIT = (0.85, 0.1, 0.05)


def pretrain_on_catalog(catalog: Catalog, out: Path, model: str, image_size: int, epochs: int, lr: float,
                        batch_size: int, device: torch.device, source: dict, seed: int = 0,
                        generation_seconds: float = 0.0, display=None) -> Path:
    """Supervised pretraining of `model` on a catalog; writes a checkpoint whose meta holds its cost."""
    build_model(model, len(catalog.classes))  # fail early on an unknown model name
    labels = catalog.labels
    rows = stratified_split(labels, PRETRAIN_SPLIT, seed)
    budget = 4 * 2**30
    splits = {name: SplitImages.build(catalog.images, index, labels, 1.0, image_size, device, budget)
              for name, index in rows.items()}
    train_cfg = TrainSection(optimizer="adamw", lr=lr, weight_decay=0.05, epochs=epochs, batch_size=batch_size,
                             device=str(device))
    spec = RunSpec(variant=f"pretrain-{source['kind']}", seed=seed, model=model, classes=catalog.classes,
                   train=train_cfg, augment=AugmentSection(), image_size=image_size, crop=1.0, thresholds=[],
                   meta={"suite": "pretrain"})
    work = out.with_name(out.name + ".work")
    if display:
        display.start_run(f"pretrain {source['kind']}", seed, epochs)
    result = train_run(spec, splits["train"], splits["val"], splits["test"], work,
                       on_event=display.on_event if display else None)
    if display:
        display.end_run(result)
    checkpoint = load_checkpoint(work / "final.pt")
    totals = result["totals"]
    cost = {key: totals[key] for key in ("samples", "train_flops", "eval_flops", "device_seconds",
                                         "eval_device_seconds", "wall_seconds", "energy_joules")}
    cost["generation_seconds"] = round(generation_seconds, 3)
    checkpoint["meta"].update(pretrain_cost=cost, pretrain_source=source,
                              pretrain_val_accuracy=result["final_val_accuracy"],
                              pretrain_test_accuracy=result["test_accuracy"])
    save_checkpoint(checkpoint, out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def pretrain_fractal(out: Path, params: FractalParams, model: str, epochs: int, lr: float, batch_size: int,
                     device: torch.device, display=None) -> Path:
    """Generate a fractal set and pretrain `model` on it (the `galbench pretrain fractal` command)."""
    params.check()
    start = time.perf_counter()
    total = params.classes * params.per_class
    if display:
        with display.bar("generating fractals", total, "images") as advance:
            catalog = generate(params, progress=advance)
    else:
        catalog = generate(params)
    generation_seconds = time.perf_counter() - start
    source = {"kind": "fractal", **params.__dict__, "model": model, "epochs": epochs, "lr": lr,
              "batch_size": batch_size}
    return pretrain_on_catalog(catalog, out, model, params.size, epochs, lr, batch_size, device, source,
                               seed=params.seed, generation_seconds=generation_seconds, display=display)


def ensure_for_variant(variant: Variant, suite: Suite, base: Path, device: torch.device, display=None) -> Path:
    """The cached pretraining checkpoint a variant's `init` asks for, made on first use."""
    kind, _, name = variant.init.partition(":")
    if kind == "fractal":
        section = variant.fractal or FractalSection()
        key = {"kind": "fractal", **section.model_dump(), "model": variant.model}
        path = cache_dir("pretrain") / f"fractal-{content_hash(key)}.pt"
        with _building(path) as missing:
            if missing:
                params = FractalParams(classes=section.classes, per_class=section.per_class, size=section.size,
                                       seed=section.seed)
                pretrain_fractal(path, params, variant.model, section.epochs, section.lr, section.batch_size,
                                 device, display)
        return path
    section = next(p for p in suite.pretrained if p.name == name)
    return ensure_catalog_pretraining(section, variant.model, suite, base, device, display)


def ensure_catalog_pretraining(section: PretrainedSection, model: str, suite: Suite, base: Path,
                               device: torch.device, display=None) -> Path:
    """Pretraining on another catalog (a FITS path or a synth table), cached by its parameters."""
    image_size = section.image_size or suite.data.image_size
    if section.synth is not None:
        catalog_file = cached_synth_catalog(section.synth.model_dump(), display.bar if display else None)
        identity = {"synth": section.synth.model_dump()}
    else:
        catalog_file = Path(section.catalog) if Path(section.catalog).is_absolute() else base / section.catalog
        if not catalog_file.exists():
            raise GalbenchError("pretraining catalog not found", where=str(catalog_file))
        identity = {"catalog": str(catalog_file.resolve()), "mtime": catalog_file.stat().st_mtime}
    key = {"kind": "catalog", **identity, "model": model, "image_size": image_size, "epochs": section.epochs,
           "lr": section.lr, "batch_size": section.batch_size}
    path = cache_dir("pretrain") / f"catalog-{content_hash(key)}.pt"
    with _building(path) as missing:
        if missing:
            catalog = read_catalog(catalog_file)
            source = {"kind": "catalog", "name": section.name, "catalog": str(catalog_file), **key}
            pretrain_on_catalog(catalog, path, model, image_size, section.epochs, section.lr, section.batch_size,
                                device, source, display=display)
    return path


@contextlib.contextmanager
def _building(path: Path) -> Iterator[bool]:
    """Yields whether a cached pretraining is still to be made; while it is, holds its lock (PATH.lock), so a
    second command fails with the holder's PID rather than training the same thing into the same files."""
    if path.exists():
        yield False
        return
    with exclusive_lock(path.with_name(path.name + ".lock"), "cached pretraining"):
        yield not path.exists()  # another process may have finished it while this one looked
