"""Pretraining sources that work offline: fractals (FractalDB-style), other galaxy catalogs, and
self-supervised learning on any catalog (galbench.experiment.ssl).

A pretraining is one ordinary galbench training run on the source data, so it has the same accounting,
event log and resume. Its checkpoint carries its cost in `meta.pretrain_cost` (samples, FLOPs,
device-seconds, energy, wall seconds, and the seconds spent generating the data), which `galbench run`
reports both on its own and spread over the runs that used it. Results are cached by a hash of
everything that made them, so every seed of a suite, and every later suite, reuses one pretraining.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from galbench.data.catalog import Catalog, read_catalog
from galbench.data.fractal import FractalParams, cached_fractal_set
from galbench.data.synth import cached_synth_catalog, synth_generation_seconds
from galbench.data.tensors import SplitImages, stratified_split
from galbench.experiment.ssl import ensure_ssl_pretraining, plan_ssl_pretraining
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
from galbench.fileio import cache_dir, cache_entry, content_hash
from galbench.models.registry import build_model
from galbench.models.weights import load_checkpoint

PRETRAIN_SPLIT = (0.85, 0.1, 0.05)


def pretrain_on_catalog(catalog: Catalog, out: Path, model: str, image_size: int, epochs: int, lr: float,
                        batch_size: int, device: torch.device, source: dict, seed: int = 0,
                        generation_seconds: float = 0.0, display=None,
                        augment: AugmentSection | None = None) -> Path:
    """Supervised pretraining of `model` on a catalog; writes a checkpoint whose meta holds its cost."""
    build_model(model, len(catalog.classes), image_size)  # fail early on a bad model name or input size
    labels = catalog.labels
    rows = stratified_split(labels, PRETRAIN_SPLIT, seed)
    budget = 4 * 2**30
    splits = {name: SplitImages.build(catalog.images, index, labels, 1.0, image_size, device, budget)
              for name, index in rows.items()}
    train_cfg = TrainSection(optimizer="adamw", lr=lr, weight_decay=0.05, epochs=epochs, batch_size=batch_size,
                             device=str(device))
    spec = RunSpec(variant=f"pretrain-{source['kind']}", seed=seed, model=model, classes=catalog.classes,
                   train=train_cfg, augment=augment or AugmentSection(), image_size=image_size, crop=1.0, thresholds=[],
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


def fractal_augment(params: FractalParams) -> AugmentSection:
    """Augmentation of a fractal pretraining: FractalDB's published one, a random crop of 224 of 256 px (that is
    shifts of up to 1/16 of the side; the flips are already among the instances), or galbench's default."""
    if params.recipe == "fractaldb":
        return AugmentSection(flips=False, rot90=False, shift=max(1, round(params.size / 16)))
    return AugmentSection()


def pretrain_fractal(out: Path, params: FractalParams, model: str, epochs: int, lr: float, batch_size: int,
                     device: torch.device, display=None) -> Path:
    """Generate (or reuse) a fractal set and pretrain `model` on it (the `galbench pretrain fractal` command).

    The set is streamed to a cached catalog file and read back memory-mapped, so a FractalDB-1k-sized set
    never has to fit in memory.
    """
    params.check()
    data_file, generation_seconds = cached_fractal_set(params, display.bar if display else None)
    source = {"kind": "fractal", **params.__dict__, "model": model, "epochs": epochs, "lr": lr,
              "batch_size": batch_size}
    return pretrain_on_catalog(read_catalog(data_file), out, model, params.size, epochs, lr, batch_size, device,
                               source, seed=params.seed, generation_seconds=generation_seconds, display=display,
                               augment=fractal_augment(params))


def pretraining_path(variant: Variant, suite: Suite, base: Path, replicate: int = 0) -> Path | None:
    """The cache file of the pretraining a variant's runs start from (None where the init is not one).

    Replicate r of a fractal pretraining draws its fractal set and trains with seed + r; replicate r of a
    catalog or self-supervised pretraining trains with seed r on the same images. Replicate 0 keeps the cache key a suite
    without replicates has always had.
    """
    kind, _, name = variant.init.partition(":")
    if kind == "fractal":
        section = _fractal_replicate(variant, replicate)
        key = {"kind": "fractal", **section.model_dump(exclude={"replicates"}), "model": variant.model}
        return _cached("fractal", key)
    if kind == "pretrained":
        section = next(p for p in suite.pretrained if p.name == name)
        if section.method != "supervised":
            return plan_ssl_pretraining(section, variant.model, suite, base, replicate).path
        return _cached("catalog", _catalog_pretraining_key(section, variant.model, suite, base, replicate)[1])
    return None


def _cached(kind: str, key: dict) -> Path:
    return cache_dir("pretrain") / f"{kind}-{content_hash(key)}.pt"


def _fractal_replicate(variant: Variant, replicate: int) -> FractalSection:
    section = variant.fractal or FractalSection()
    return section.model_copy(update={"seed": section.seed + replicate})


def ensure_for_variant(variant: Variant, suite: Suite, base: Path, device: torch.device, display=None,
                       replicate: int = 0) -> Path:
    """The cached pretraining checkpoint a variant's `init` asks for (one of its replicates), made on first use."""
    kind, _, name = variant.init.partition(":")
    if kind == "fractal":
        path = pretraining_path(variant, suite, base, replicate)
        with cache_entry(path, "cached pretraining") as missing:
            if missing:
                section = _fractal_replicate(variant, replicate)
                params = FractalParams(classes=section.classes, per_class=section.per_class, size=section.size,
                                       seed=section.seed, recipe=section.recipe)
                pretrain_fractal(path, params, variant.model, section.epochs, section.lr, section.batch_size,
                                 device, display)
        return path
    section = next(p for p in suite.pretrained if p.name == name)
    if section.method != "supervised":
        return ensure_ssl_pretraining(section, variant.model, suite, base, device, display, replicate)
    return ensure_catalog_pretraining(section, variant.model, suite, base, device, display, replicate)


def _catalog_pretraining_key(section: PretrainedSection, model: str, suite: Suite, base: Path,
                             replicate: int) -> tuple[Path | None, dict]:
    """The catalog file a pretraining reads (None for a synth table, made on demand) and its cache key."""
    image_size = section.image_size or suite.data.image_size
    if section.synth is not None:
        catalog_file, identity = None, {"synth": section.synth.model_dump()}
    else:
        catalog_file = section.catalog_file(base)
        identity = {"catalog": str(catalog_file.resolve()), "mtime": catalog_file.stat().st_mtime}
    key = {"kind": "catalog", **identity, "model": model, "image_size": image_size, "epochs": section.epochs,
           "lr": section.lr, "batch_size": section.batch_size, **({"seed": replicate} if replicate else {})}
    return catalog_file, key


def ensure_catalog_pretraining(section: PretrainedSection, model: str, suite: Suite, base: Path,
                               device: torch.device, display=None, replicate: int = 0) -> Path:
    """Pretraining on another catalog (a FITS path or a synth table), cached by its parameters."""
    catalog_file, key = _catalog_pretraining_key(section, model, suite, base, replicate)
    path = _cached("catalog", key)
    with cache_entry(path, "cached pretraining") as missing:
        if missing:
            generation_seconds = 0.0  # a catalog file's making is outside galbench's view
            if catalog_file is None:
                catalog_file = cached_synth_catalog(section.synth.model_dump(), display.bar if display else None)
                generation_seconds = synth_generation_seconds(section.synth.model_dump()) or 0.0
            catalog = read_catalog(catalog_file)
            source = {"kind": "catalog", "name": section.name, "catalog": str(catalog_file), **key}
            pretrain_on_catalog(catalog, path, model, key["image_size"], section.epochs, section.lr,
                                section.batch_size, device, source, seed=replicate,
                                generation_seconds=generation_seconds, display=display)
    return path
