"""The galaxy-catalog FITS file: one file holds a catalog table and its images.

Layout (documented in the README):

- HDU ``CATALOG``: binary table, one row per galaxy. ``objid`` (int64 or string) is required;
  ``ra``/``dec`` (deg) and ``label`` (int16, -1 = unknown) are optional; any other column is carried
  through untouched. Header ``CLASSES`` names the classes, comma-separated, index = label.
- HDU ``IMAGES``: uint8 cube (N, 3, H, W), rows aligned with ``CATALOG``; header ``BANDS``,
  ``PIXSCALE`` (arcsec/pixel), ``SOURCE``, ``STRETCH`` (the canonical stretch spec that made 8-bit colour of
  FITS science images, `galbench.data.stretch`; absent reads as ``minmax``) and, for imported images, the
  import's centre crop ``IMPCROP`` (fraction of the side if <= 1, else pixels) and resize ``IMPSIZE``
  (pixels), so image files can be prepared later exactly as the import prepared them.

Reading is lazy: the image cube is a memory map, so opening a 10 GB file reads only its headers.
"""

from __future__ import annotations

import mmap
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Column, Table

from galbench.data.stretch import format_stretch, parse_stretch
from galbench.errors import GalbenchError
from galbench.fileio import atomic_path

UNKNOWN_LABEL = -1


@dataclass
class Catalog:
    """A catalog table, its class names and (optionally) its image cube."""

    table: Table
    classes: list[str]
    images: np.ndarray | None = None
    bands: str = "i,r,g"
    pixscale: float | None = None
    source: str = ""
    path: Path | None = field(default=None, compare=False)
    stretch: str = "minmax"  # canonical spec (galbench.data.stretch.format_stretch)
    import_crop: float | int | None = None  # the import's centre crop: fraction of the side if <= 1, else pixels
    import_size: int | None = None  # the import's resize, pixels per side

    def __len__(self) -> int:
        return len(self.table)

    @property
    def labels(self) -> np.ndarray:
        """Labels as int64 (-1 where unknown or where the catalog has no label column)."""
        if "label" not in self.table.colnames:
            return np.full(len(self.table), UNKNOWN_LABEL, dtype=np.int64)
        return np.asarray(self.table["label"], dtype=np.int64)

    def class_counts(self) -> dict[str, int]:
        """Number of galaxies per class name, plus 'unknown' where labels are -1."""
        labels = self.labels
        counts = {name: int((labels == index).sum()) for index, name in enumerate(self.classes)}
        unknown = int((labels == UNKNOWN_LABEL).sum())
        if unknown:
            counts["unknown"] = unknown
        return counts


def _fail(path: Path | str, hdu: str | None, what: str, fix: str | None = None) -> GalbenchError:
    where = f"{path}[{hdu}]" if hdu else str(path)
    return GalbenchError(what, where=where, fix=fix)


def validate(catalog: Catalog, path: Path | str = "<catalog>") -> None:
    """Check a catalog's invariants; raise GalbenchError naming the file, the HDU and the problem."""
    table = catalog.table
    if "objid" not in table.colnames:
        raise _fail(path, "CATALOG", "missing column 'objid'", "every row needs an object id")
    if len(table) == 0:
        raise _fail(path, "CATALOG", "the catalog has no rows", "a catalog holds at least one galaxy")
    if not catalog.classes or any(not name or "," in name for name in catalog.classes):
        raise _fail(path, "CATALOG", f"bad CLASSES header '{','.join(catalog.classes)}'",
                    "CLASSES must be comma-separated, non-empty class names")
    for column in ("ra", "dec"):
        if column in table.colnames:
            values = np.asarray(table[column], dtype=float)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise _fail(path, "CATALOG", f"column '{column}' has {bad.size} NaN or infinite values "
                            f"(first at row {bad[0]}, objid {table['objid'][bad[0]]})")
    if "dec" in table.colnames:
        dec = np.asarray(table["dec"], dtype=float)
        bad = np.flatnonzero(np.abs(dec) > 90)
        if bad.size:
            raise _fail(path, "CATALOG", f"column 'dec' has {bad.size} values outside [-90, 90] degrees "
                        f"(first: {dec[bad[0]]:g} at row {bad[0]}, objid {table['objid'][bad[0]]})",
                        "declinations are in degrees; are ra and dec swapped, or in radians?")
    if "label" in table.colnames:
        labels = np.asarray(table["label"])
        if not np.issubdtype(labels.dtype, np.integer):
            raise _fail(path, "CATALOG", f"column 'label' has dtype {labels.dtype.name}, expected an integer type")
        bad = np.flatnonzero((labels < UNKNOWN_LABEL) | (labels >= len(catalog.classes)))
        if bad.size:
            raise _fail(path, "CATALOG", f"label {labels[bad[0]]} at row {bad[0]} is outside the "
                        f"{len(catalog.classes)} classes {', '.join(catalog.classes)} ({bad.size} rows bad)",
                        "labels run from 0 to len(CLASSES)-1, or -1 for unknown")
    images = catalog.images
    if images is not None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise _fail(path, "IMAGES", f"image cube has shape {images.shape}, expected (N, 3, H, W)")
        if images.dtype != np.uint8:
            raise _fail(path, "IMAGES", f"image cube has dtype {images.dtype}, expected uint8")
        if images.shape[0] != len(table):
            raise _fail(path, "IMAGES", f"{images.shape[0]} images but {len(table)} catalog rows",
                        "IMAGES and CATALOG rows must be aligned one to one")


def read_catalog(path: str | os.PathLike, require_images: bool = True) -> Catalog:
    """Open a catalog FITS file lazily (images memory-mapped) and validate it."""
    path = Path(path)
    hdul = open_fits(path)
    names = [hdu.name for hdu in hdul]
    if "CATALOG" not in names:
        raise _fail(path, None, f"no CATALOG HDU (found {', '.join(names)})",
                    "write catalogs with galbench data synth/import or galbench.data.catalog.write_catalog")
    cat_hdu = hdul["CATALOG"]
    if not isinstance(cat_hdu, fits.BinTableHDU):
        raise _fail(path, "CATALOG", "is not a binary table")
    try:
        table = Table(cat_hdu.data, copy=True)
    except (OSError, ValueError, TypeError) as exc:
        raise _fail(path, "CATALOG", f"table cannot be read ({exc})") from None
    for column in table.colnames:  # FITS is bytes-typed; hand out str
        if table[column].dtype.kind == "S":
            table[column] = table[column].astype(str)
    return catalog_from_hdus(hdul, native_byte_order(table), path, require_images)


def native_byte_order(table: Table) -> Table:
    """The table with its numbers in native byte order (FITS stores them big-endian); mixin columns (times,
    sky coordinates) are left as they are."""
    for column in table.colnames:
        data = table[column]
        if isinstance(data, Column) and data.dtype.kind in "iuf" and not data.dtype.isnative:
            table[column] = data.astype(data.dtype.newbyteorder("="))
    return table


def open_fits(path: Path) -> fits.HDUList:
    """A FITS file opened lazily, its HDUs listed, image data memory-mapped; one clear error where it cannot be."""
    if not path.exists():
        raise GalbenchError("file not found", where=str(path))
    if path.is_dir():
        raise GalbenchError("is a folder, not a catalog FITS file", where=str(path))
    refuse_compressed(path)
    return open_hdus(path)


def open_hdus(path: Path) -> fits.HDUList:
    """Every HDU of a FITS file, headers read and data memory-mapped. A file damaged after its last whole HDU
    (cut inside a header, say) is refused: astropy only warns and stops reading there, and the HDUs it
    missed would be reported as absent."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, memmap=True, lazy_load_hdus=True)
            hdul.readall()
        except (OSError, ValueError) as exc:
            raise _fail(path, None, f"not a readable FITS file ({exc})") from None
    damage = [str(w.message) for w in caught if "the file is corrupted" in str(w.message)]
    if damage:
        last = len(hdul) - 1
        hdul.close()
        detail = " ".join(line.strip() for line in damage[0].splitlines()[1:2])
        raise _fail(path, None, f"damaged after HDU {last} ({detail}): truncated or corrupted file?")
    return hdul


def refuse_compressed(path: Path) -> None:
    """Refuse a gzip- or bzip2-compressed catalog, saying how to decompress it."""
    with open(path, "rb") as handle:
        magic = handle.read(3)
    for signature, kind, tool in ((b"\x1f\x8b", "gzip", "gunzip"), (b"BZh", "bzip2", "bunzip2")):
        if magic.startswith(signature):
            raise GalbenchError(f"{kind}-compressed: galbench memory-maps the image cube, which a compressed "
                                "file cannot offer", where=str(path), fix=f"decompress it first: {tool} -k {path}")


def catalog_from_hdus(hdul: fits.HDUList, table: Table, path: Path, require_images: bool = False) -> Catalog:
    """The validated catalog of an open galbench catalog file, given its CATALOG table as read: the class
    names from CATALOG's header, the IMAGES cube memory-mapped (where there is one) with its headers."""
    classes_text = hdul["CATALOG"].header.get("CLASSES", "")
    classes = [name.strip() for name in str(classes_text).split(",")] if classes_text else []
    if not classes:
        raise _fail(path, "CATALOG", "header has no CLASSES key", "add CLASSES = 'name0,name1,...'")
    images = None
    bands, pixscale, source, preparation = "i,r,g", None, "", {}
    names = [hdu.name for hdu in hdul]
    if "IMAGES" in names:
        img_hdu = hdul["IMAGES"]
        if not isinstance(img_hdu, fits.ImageHDU):
            raise _fail(path, "IMAGES", "is not an image HDU")
        bitpix = img_hdu.header.get("BITPIX")
        if bitpix != 8 or "BZERO" in img_hdu.header or "BSCALE" in img_hdu.header:
            raise _fail(path, "IMAGES", f"BITPIX={bitpix}, expected 8 (unscaled uint8 images)")
        data_end = img_hdu.fileinfo()["datLoc"] + int(np.prod(img_hdu.shape or (0,)))
        if data_end > path.stat().st_size:
            raise _fail(path, "IMAGES", f"file ends at byte {path.stat().st_size} but the images need "
                        f"{data_end} bytes (truncated file?)")
        try:
            images = img_hdu.data
        except (OSError, ValueError, TypeError) as exc:
            raise _fail(path, "IMAGES", f"image data cannot be read ({exc})") from None
        if images is None:
            raise _fail(path, "IMAGES", "HDU holds no data")
        bands = str(img_hdu.header.get("BANDS", bands))
        pixscale = img_hdu.header.get("PIXSCALE")
        source = str(img_hdu.header.get("SOURCE", ""))
        preparation = _read_preparation(img_hdu.header, path)
    elif require_images:
        raise _fail(path, None, f"no IMAGES HDU (found {', '.join(names)})",
                    "this command needs the images; only catalogs with an IMAGES HDU can be used")
    catalog = Catalog(table=table, classes=classes, images=images, bands=bands,
                      pixscale=float(pixscale) if pixscale is not None else None, source=source, path=path,
                      **preparation)
    validate(catalog, path)
    return catalog


def _read_preparation(header: fits.Header, path: Path) -> dict:
    """STRETCH (canonical; minmax where absent, as catalogs written before it were), IMPCROP and IMPSIZE."""
    try:
        stretch = format_stretch(parse_stretch(str(header.get("STRETCH", "minmax"))))
    except GalbenchError as exc:
        raise _fail(path, "IMAGES", f"bad STRETCH header: {exc.what}") from None
    crop, size = header.get("IMPCROP"), header.get("IMPSIZE")
    if not all(value is None or isinstance(value, int | float) for value in (crop, size)):
        raise _fail(path, "IMAGES", f"IMPCROP and IMPSIZE must be numbers (found {crop!r}, {size!r})")
    return {"stretch": stretch, "import_crop": None if crop is None else float(crop) if crop <= 1 else int(crop),
            "import_size": None if size is None else int(size)}


def write_catalog(path: str | os.PathLike, catalog: Catalog, include_images: bool = True) -> Path:
    """Validate and write a catalog FITS file atomically (temporary file, then rename)."""
    path = Path(path)
    validate(catalog, path)
    table = catalog.table.copy(copy_data=False)
    if "label" in table.colnames:
        table["label"] = np.asarray(table["label"], dtype=np.int16)
    with warnings.catch_warnings():
        # astropy warns about long column names and keywords it folds; neither matters here
        warnings.simplefilter("ignore")
        cat_hdu = fits.BinTableHDU(table, name="CATALOG")
    cat_hdu.header["CLASSES"] = ",".join(catalog.classes)
    hdus = [fits.PrimaryHDU(), cat_hdu]
    if include_images and catalog.images is not None:
        img_hdu = fits.ImageHDU(np.ascontiguousarray(catalog.images), name="IMAGES")
        img_hdu.header["BANDS"] = catalog.bands
        if catalog.pixscale is not None:
            img_hdu.header["PIXSCALE"] = (float(catalog.pixscale), "arcsec/pixel")
        img_hdu.header["SOURCE"] = catalog.source
        img_hdu.header["STRETCH"] = catalog.stretch  # no comment: a long spec would leave no room for one
        if catalog.import_crop is not None:
            img_hdu.header["IMPCROP"] = (catalog.import_crop, "import crop: fraction of side, or pixels")
        if catalog.import_size is not None:
            img_hdu.header["IMPSIZE"] = (int(catalog.import_size), "import resize (Lanczos), pixels")
        hdus.append(img_hdu)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return path


def write_catalog_stream(path: str | os.PathLike, table: Table, classes: list[str], image_shape: tuple[int, int, int],
                         blocks: Iterable[np.ndarray], bands: str = "i,r,g", pixscale: float | None = None,
                         source: str = "") -> Path:
    """Write a catalog whose images arrive in blocks of rows, so memory stays flat however large it is.

    The file is the one `write_catalog` makes (an IMAGES cube of len(table) rows of `image_shape` uint8),
    written atomically; the blocks must add up to exactly one image per table row.
    """
    path = Path(path)
    validate(Catalog(table=table, classes=classes), path)
    rows = len(table)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat_hdu = fits.BinTableHDU(table, name="CATALOG")
    cat_hdu.header["CLASSES"] = ",".join(classes)
    # the header of a one-row cube of the right type and shape, then the real row count
    header = fits.ImageHDU(np.zeros((1, *image_shape), dtype=np.uint8), name="IMAGES").header
    header["NAXIS4"] = rows
    header["BANDS"] = bands
    if pixscale is not None:
        header["PIXSCALE"] = (float(pixscale), "arcsec/pixel")
    header["SOURCE"] = source
    row_bytes = int(np.prod(image_shape))
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), cat_hdu]).writeto(tmp)
        written = 0
        with open(tmp, "ab") as handle:
            handle.write(header.tostring().encode("ascii"))
            for block in blocks:
                block = np.ascontiguousarray(block, dtype=np.uint8)
                if block.shape[1:] != tuple(image_shape) or written + len(block) > rows:
                    raise GalbenchError(f"image block of shape {block.shape} does not fit {rows} rows of "
                                        f"{image_shape}", where=str(path))
                handle.write(block.tobytes())  # FITS is big-endian, but bytes have no byte order
                written += len(block)
            if written != rows:
                raise GalbenchError(f"{written} images written for {rows} catalog rows", where=str(path))
            handle.write(b"\0" * (-written * row_bytes % 2880))  # FITS data ends on a 2,880-byte block
    return path
def catalog_summary(catalog: Catalog) -> dict:
    """What a catalog holds, as plain JSON-able data (`galbench data info --json`)."""
    table = catalog.table
    summary = {"file": str(catalog.path) if catalog.path else None, "rows": len(table),
               "classes": list(catalog.classes), "class_counts": catalog.class_counts(),
               "columns": list(table.colnames), "images": None}
    for column in ("ra", "dec"):
        if column in table.colnames:
            values = np.asarray(table[column], dtype=float)
            summary[f"{column}_range_deg"] = [float(values.min()), float(values.max())]
    if catalog.images is not None:
        summary["images"] = {"shape": list(catalog.images.shape), "dtype": str(catalog.images.dtype),
                             "bands": catalog.bands.split(","), "pixscale_arcsec": catalog.pixscale,
                             "source": catalog.source, "stretch": catalog.stretch,
                             "import_crop": catalog.import_crop, "import_size": catalog.import_size}
    return summary


def _mapped_range(images: np.ndarray, start: int, stop: int):
    """The mmap under a memory-mapped image cube and the page-aligned (offset, length) of rows [start, stop)."""
    base = images
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is None or not hasattr(base, "madvise") or stop <= start:
        return None
    origin = np.frombuffer(base, dtype=np.uint8).ctypes.data
    row_bytes = int(np.prod(images.shape[1:])) * images.itemsize
    first = images.ctypes.data - origin + start * row_bytes
    aligned = first - first % mmap.PAGESIZE
    return base, aligned, first - aligned + (stop - start) * row_bytes


def release_pages(images: np.ndarray, start: int, stop: int) -> None:
    """Tell the OS that rows [start, stop) of a memory-mapped image cube are done with.

    Pages of a file mapping that were read stay resident (and count in the process's memory) until the
    kernel needs them; streaming a catalog larger than memory through once should not keep them. Dropping
    them is always safe: a later read maps them in again from the file. A no-op for in-memory arrays.
    """
    found = _mapped_range(images, start, stop)
    if found is not None:
        base, offset, length = found
        base.madvise(mmap.MADV_DONTNEED, offset, length)
