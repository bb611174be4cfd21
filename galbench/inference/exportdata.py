"""The images an export needs: a parity sample, labelled validation images (temperature, int8 gate) and
training images (int8 ranges), from a run directory's own split or from a labelled catalog."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galbench.data.catalog import Catalog, read_catalog
from galbench.data.tensors import map_classes
from galbench.errors import GalbenchError


@dataclass
class ExportData:
    """Raw catalog images (uint8 N, 3, H, W) and labels in the checkpoint's class order, and the catalog
    (its stretch, import crop and size, and pixel scale go into the model's metadata)."""

    sample: np.ndarray
    val_images: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    train_images: np.ndarray | None = None
    catalog: Catalog | None = None


def run_catalog(run_dir: Path) -> tuple[Catalog, np.ndarray, dict]:
    """A run's catalog, its labels as the suite mapped them, and its split (split.json)."""
    run_dir = Path(run_dir)
    try:
        split = json.loads((run_dir / "split.json").read_text())
        resolved = json.loads((run_dir / "suite.resolved.json").read_text())
    except (OSError, ValueError) as exc:
        raise GalbenchError(f"not a readable run directory ({type(exc).__name__})", where=str(run_dir),
                            fix="pass the folder galbench run wrote (with split.json)") from None
    catalog = read_catalog(resolved["catalog_path"])
    _, labels = map_classes(catalog, resolved["data"].get("classes"), resolved["data"].get("ttype_bins"))
    return catalog, labels, split


def seed_split(split: dict, seed, run_dir: Path) -> dict:
    """The rows a run of `seed` used: split.json's one split, or that seed's where each seed has its own."""
    if not split.get("per_seed"):
        return split
    if str(seed) not in split["seeds"]:
        raise GalbenchError(f"the run has no split for the checkpoint's seed {seed}", where=str(run_dir),
                            fix="export a checkpoint of this run directory")
    return split["seeds"][str(seed)]


def from_run(run_dir: Path, checkpoint: dict, parity_images: int, training_images: bool) -> ExportData:
    """The validation split of the checkpoint's own run (its seed's, where each seed has a split), labelled
    as the suite mapped them; its training images too where `training_images` (int8 ranges)."""
    catalog, labels, split = run_catalog(run_dir)
    classes = checkpoint["classes"]
    if split["classes"] != classes:
        raise GalbenchError(f"the run's classes ({', '.join(split['classes'])}) differ from the checkpoint's "
                            f"({', '.join(classes)})", where=str(run_dir))
    split = seed_split(split, checkpoint.get("meta", {}).get("seed"), run_dir)
    val = np.asarray(split["val"])
    val_images = np.asarray(catalog.images[val])
    train = np.asarray(catalog.images[np.asarray(split["train"])]) if training_images else None
    return ExportData(val_images[:parity_images], val_images, labels[val], train, catalog)


def from_catalog(path: Path, classes: list[str], parity_images: int, training_images: bool) -> ExportData:
    """A catalog's images; its labelled rows (class names as the checkpoint's) for calibration and the gate."""
    catalog = read_catalog(path)
    labelled = np.flatnonzero(catalog.labels >= 0)
    data = ExportData(np.asarray(catalog.images[:parity_images]), catalog=catalog,
                      train_images=np.asarray(catalog.images) if training_images else None)
    if labelled.size and catalog.classes == classes:
        data.val_images, data.val_labels = np.asarray(catalog.images[labelled]), catalog.labels[labelled]
    return data
