"""Bring real images in: a folder plus a labels CSV, a folder per class, or a Galaxy10 HDF5 file."""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table
from PIL import Image, UnidentifiedImageError

from galbench.data.catalog import Catalog
from galbench.data.stretch import format_stretch, load_fits_image, parse_stretch, stretch_bands
from galbench.errors import GalbenchError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".fits", ".fit")
GALAXY10_CLASSES = [
    "disturbed", "merging", "round-smooth", "in-between-round-smooth", "cigar-round-smooth",
    "barred-spiral", "unbarred-tight-spiral", "unbarred-loose-spiral", "edge-on-no-bulge", "edge-on-with-bulge",
]


@dataclass
class ImportReport:
    """What an import kept and what it dropped, with reasons."""

    kept: int = 0
    unmapped: int = 0
    duplicates: int = 0  # rows dropped by dedupe="first"
    bad_images: list[tuple[str, str]] = field(default_factory=list)


def parse_class_map(entries: list[str]) -> dict[str, list[str]]:
    """Parse `--map NAME=SRC[,SRC...]` entries into {class name: [source labels]}, order kept."""
    mapping: dict[str, list[str]] = {}
    for entry in entries:
        name, sep, sources = entry.partition("=")
        if not sep or not name.strip() or not sources.strip():
            raise GalbenchError(f"bad --map entry {entry!r}", fix="write NAME=LABEL[,LABEL...], e.g. spiral=1,2")
        mapping[name.strip()] = [s.strip() for s in sources.split(",") if s.strip()]
    seen: dict[str, str] = {}
    for name, sources in mapping.items():
        for source in sources:
            if source in seen:
                raise GalbenchError(f"source label {source!r} is mapped to both {seen[source]!r} and {name!r}",
                                    where="--map")
            seen[source] = name
    return mapping


def crop_and_resize(image: np.ndarray, crop: float | int | None, size: int | None) -> np.ndarray:
    """Centre-crop an (H, W, 3) uint8 image (fraction of the side if < 1, else pixels), then resize."""
    height, width = image.shape[:2]
    if crop:
        side_h = int(round(height * crop)) if crop <= 1 else int(crop)
        side_w = int(round(width * crop)) if crop <= 1 else int(crop)
        if side_h > height or side_w > width or side_h < 1:
            raise ValueError(f"crop {crop} does not fit a {height}x{width} image")
        top, left = (height - side_h) // 2, (width - side_w) // 2
        image = image[top:top + side_h, left:left + side_w]
    if size and image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))
    return image


def load_image(path: Path, stretch: dict | None = None) -> tuple[np.ndarray, int]:
    """Decode a JPEG, PNG or FITS image into (H, W, 3) uint8, and count its filled pixels; raise ValueError if
    it is unusable.

    FITS images go through `galbench.data.stretch` (`stretch`: a parsed spec, default minmax), which fills
    non-finite pixels (the count returned; 0 for other formats) rather than refusing the image.
    """
    if path.suffix.lower() in (".fits", ".fit"):
        return load_fits_image(path, stretch)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                # 16-bit or float greyscale: PIL's conversion to 8 bits clips at 255 instead of scaling
                bands = np.repeat(np.asarray(img, dtype=np.float64)[None], 3, axis=0)
                if not np.isfinite(bands).all():
                    raise ValueError("image has NaN or infinite pixels")
                return stretch_bands(bands, parse_stretch(None)), 0  # minmax: from its own range
            return np.asarray(img.convert("RGB")), 0
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot decode image ({exc})") from None


def _decode_all(paths: list[Path], crop, size, stretch: dict, strict: bool, report: ImportReport,
                progress: Callable[[int], None] | None, workers: int | None):
    """Decode images in parallel threads; return the kept indices, their stacked images and filled pixels."""

    def decode(path: Path):
        try:
            image, filled = load_image(path, stretch)
            return crop_and_resize(image, crop, size), filled, None
        except (ValueError, OSError) as exc:
            return None, 0, str(exc)

    images, kept, filled_pixels = [], [], []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for index, (image, filled, error) in enumerate(pool.map(decode, paths)):
            if progress:
                progress(1)
            if error is not None:
                if strict:
                    raise GalbenchError(error, where=str(paths[index]), fix="fix or remove it, or drop --strict")
                report.bad_images.append((str(paths[index]), error))
                continue
            if images and image.shape != images[0].shape:
                message = f"image is {image.shape[1]}x{image.shape[0]}, others are {images[0].shape[1]}x{images[0].shape[0]}"
                if strict:
                    raise GalbenchError(message, where=str(paths[index]), fix="pass --size to resize all images")
                report.bad_images.append((str(paths[index]), message))
                continue
            images.append(image)
            kept.append(index)
            filled_pixels.append(filled)
    if not images:
        raise GalbenchError("no image could be imported", fix="check the folder and the --map classes")
    return np.asarray(kept), np.stack(images).transpose(0, 3, 1, 2).copy(), np.asarray(filled_pixels, np.int32)


def _imported_catalog(table: Table, paths: list[Path], filled_pixels: np.ndarray, classes: list[str], crop, size,
                      stretch: dict, **fields) -> Catalog:
    """The catalog of decoded images: `filled_pixels` where any FITS image was read, and the import's
    preparation (stretch, crop, size) recorded so that image files can later be prepared alike."""
    if any(path.suffix.lower() in (".fits", ".fit") for path in paths):
        table["filled_pixels"] = filled_pixels  # non-finite FITS pixel values filled before stretching
    return Catalog(table=table, classes=classes, stretch=format_stretch(stretch), import_crop=crop or None,
                   import_size=size, **fields)


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None


def read_labels_csv(csv_path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a labels CSV (UTF-8, with or without a byte-order mark) that has the `needed` columns."""
    if not csv_path.exists():
        raise GalbenchError("labels CSV not found", where=str(csv_path), fix="pass --labels CSV")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            for column in needed:
                if column not in columns:
                    raise GalbenchError(f"missing column {column!r} (columns: {', '.join(columns)})",
                                        where=str(csv_path))
            return list(reader)
    except UnicodeDecodeError as exc:
        raise GalbenchError(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
                            where=str(csv_path), fix="save the CSV as UTF-8") from None


def _classes_from_values(values: list[str]) -> dict[str, list[str]]:
    """One class per distinct source label, numbers in numeric order, else alphabetical."""
    distinct = set(values)
    try:
        ordered = sorted(distinct, key=float)
    except ValueError:
        ordered = sorted(distinct)
    return {value: [value] for value in ordered}


def check_duplicates(objids: list[str], labels: list[int], where: str, dedupe: str | None) -> list[int]:
    """Indices of the rows to keep: all of them when every objid is unique, each objid's first row with
    dedupe="first"; otherwise one line naming the duplicated objids (a galaxy twice would leak between
    the training and test splits, and conflicting labels cannot both be right)."""
    first_row: dict[str, int] = {}
    label_sets: dict[str, set[int]] = {}
    for index, (objid, label) in enumerate(zip(objids, labels, strict=True)):
        first_row.setdefault(objid, index)
        label_sets.setdefault(objid, set()).add(label)
    keep = sorted(first_row.values())
    if len(keep) == len(objids) or dedupe == "first":
        return keep
    counts = Counter(objids)
    repeated = [objid for objid in first_row if counts[objid] > 1]
    conflicting = [objid for objid in repeated if len(label_sets[objid]) > 1]
    named = conflicting or repeated
    shown = ", ".join(named[:5]) + (", ..." if len(named) > 5 else "")
    raise GalbenchError(f"{len(repeated)} objids appear more than once, {len(conflicting)} of them with "
                        f"conflicting labels ({shown})", where=where,
                        fix="remove the duplicate rows, or pass --dedupe first to keep each objid's first row")


def import_folder_csv(folder: str | os.PathLike, labels_csv: str | os.PathLike | None, class_column: str,
                      class_map: dict[str, list[str]] | None, id_column: str = "objid", crop=None, size=None,
                      strict: bool = False, progress=None, workers=None, dedupe: str | None = None,
                      stretch: str | None = None) -> tuple[Catalog, ImportReport]:
    """Import `folder/<objid>.<ext>` images labelled by a CSV (the gz1-sdss layout).

    Without a class map every distinct value of the class column is a class. `stretch` (a `--stretch` spec,
    default minmax) makes 8-bit colour of FITS science images."""
    parsed = parse_stretch(stretch)
    folder = Path(folder)
    csv_path = Path(labels_csv) if labels_csv else folder / "labels.csv"
    rows = read_labels_csv(csv_path, (id_column, class_column))
    if class_map is None:
        class_map = _classes_from_values([row[class_column].strip() for row in rows])
    source_to_label = {src: index for index, sources in enumerate(class_map.values()) for src in sources}
    report = ImportReport()
    mapped = [(line, row) for line, row in enumerate(rows, start=2)
              if row[class_column].strip() in source_to_label]
    report.unmapped = len(rows) - len(mapped)
    keep = check_duplicates([row[id_column].strip() for _, row in mapped],
                            [source_to_label[row[class_column].strip()] for _, row in mapped], str(csv_path), dedupe)
    report.duplicates = len(mapped) - len(keep)
    paths, objids, labels, extra = [], [], [], []
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    for line, row in (mapped[k] for k in keep):
        source_label = row[class_column].strip()
        path = _find_image(image_dir, row[id_column].strip())
        if path is None:
            message = "image file not found"
            if strict:
                raise GalbenchError(message, where=f"{csv_path}:{line} ({row[id_column]})")
            report.bad_images.append((f"{image_dir}/{row[id_column]}.*", message))
            continue
        paths.append(path)
        objids.append(row[id_column].strip())
        labels.append(source_to_label[source_label])
        extra.append(source_label)
    if progress:  # rows dropped before decoding count as done, so the bar over all CSV rows completes
        progress(report.unmapped + report.duplicates + len(report.bad_images))
    kept, images, filled = _decode_all(paths, crop, size, parsed, strict, report, progress, workers)
    table = Table()
    table["objid"] = _objid_column([objids[k] for k in kept])
    table["label"] = np.asarray(labels, dtype=np.int16)[kept]
    table["source_label"] = np.asarray(extra)[kept]
    report.kept = len(kept)
    source = f"galbench import {folder.name} ({class_column})"
    catalog = _imported_catalog(table, [paths[k] for k in kept], filled, list(class_map), crop, size, parsed,
                                images=images, bands="i,r,g", source=source)
    return catalog, report


def import_class_folders(folder: str | os.PathLike, crop=None, size=None, strict=False, progress=None,
                         workers=None, dedupe: str | None = None,
                         stretch: str | None = None) -> tuple[Catalog, ImportReport]:
    """Import a folder with one sub-folder per class (the sub-folder's name is the class name; the file's
    name without its suffix is the objid); `stretch` as for `import_folder_csv`."""
    parsed = parse_stretch(stretch)
    folder = Path(folder)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not class_dirs:
        raise GalbenchError("no class sub-folders found", where=str(folder),
                            fix="use one sub-folder per class, or pass --labels CSV")
    paths, labels = [], []
    for index, class_dir in enumerate(class_dirs):
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(index)
    report = ImportReport()
    keep = check_duplicates([path.stem for path in paths], labels, str(folder), dedupe)
    report.duplicates = len(paths) - len(keep)
    paths, labels = [paths[k] for k in keep], [labels[k] for k in keep]
    kept, images, filled = _decode_all(paths, crop, size, parsed, strict, report, progress, workers)
    table = Table()
    table["objid"] = _objid_column([paths[k].stem for k in kept])
    table["label"] = np.asarray(labels, dtype=np.int16)[kept]
    report.kept = len(kept)
    catalog = _imported_catalog(table, [paths[k] for k in kept], filled, [d.name for d in class_dirs], crop, size,
                                parsed, images=images, source=f"galbench import {folder.name} (class folders)")
    return catalog, report


def import_galaxy10(path: str | os.PathLike, crop=None, size=None) -> tuple[Catalog, ImportReport]:
    """Import a Galaxy10 HDF5 file (astroNN layout: images (N, H, W, 3) uint8, ans; ra, dec if present)."""
    try:
        import h5py
    except ImportError:
        raise GalbenchError("reading Galaxy10 needs h5py", fix="pip install 'galbench[hdf5]'") from None
    path = Path(path)
    with h5py.File(path, "r") as handle:
        for key in ("images", "ans"):
            if key not in handle:
                raise GalbenchError(f"missing dataset {key!r} (found {', '.join(handle)})", where=str(path))
        raw = handle["images"]
        if raw.ndim != 4 or raw.shape[3] != 3 or raw.dtype != np.uint8:
            raise GalbenchError(f"images are {raw.dtype} {raw.shape}, expected uint8 (N, H, W, 3)", where=str(path))
        images = np.stack([crop_and_resize(raw[k], crop, size) for k in range(raw.shape[0])])
        table = Table()
        table["objid"] = np.arange(raw.shape[0], dtype=np.int64)
        table["label"] = np.asarray(handle["ans"], dtype=np.int16)
        for key in ("ra", "dec", "redshift"):
            if key in handle:
                table[key] = np.asarray(handle[key], dtype=float)
    catalog = Catalog(table=table, classes=list(GALAXY10_CLASSES), images=images.transpose(0, 3, 1, 2).copy(),
                      bands="g,r,z", source=f"galbench import {path.name} (Galaxy10)", import_crop=crop or None,
                      import_size=size)
    return catalog, ImportReport(kept=len(table))


def _objid_column(values: list[str]) -> np.ndarray:
    """objids as int64 where every one is an integer (SDSS objIDs), else as strings."""
    try:
        return np.asarray([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.asarray(values, dtype=str)
