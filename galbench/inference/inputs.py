"""Catalogs to classify, in any table format astropy reads, with everything they say about themselves.

- FITS: the `CATALOG` binary table, else the first binary table; with an `IMAGES` HDU it is a galbench
  catalog (read through `galbench.data.catalog`, images memory-mapped), otherwise it needs an image-path
  column. Column units, TNULL nulls (masked values), TDISP formats and TCOMM descriptions are kept, and so
  is the primary header. A `CLASSES` key is needed only to check a `label` column against the model.
- VOTable (.xml, .vot), CSV (.csv), ECSV (.ecsv) and Parquet (.parquet, needs pyarrow): read with astropy's
  `Table.read`; they need an image-path column (paths relative to the catalog file).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from galbench.data.catalog import (
    catalog_from_hdus,
    native_byte_order,
    open_hdus,
    read_catalog,
    refuse_compressed,
)
from galbench.errors import GalbenchError

FORMATS = {".fits": "fits", ".fit": "fits", ".fts": "fits", ".xml": "votable", ".vot": "votable",
           ".votable": "votable", ".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".parquet": "parquet",
           ".pq": "parquet"}
PATH_COLUMNS = ("image_path", "path", "filename")
FULL_HASH_BYTES = 64 * 2**20
SAMPLED_ROWS = 64
_TCOMM = re.compile(r"TCOMM(\d+)$")


@dataclass
class InputCatalog:
    """A catalog to classify: its table (units, masks, descriptions and header cards kept) and its images."""

    path: Path
    format: str
    table: Table
    primary_header: fits.Header | None = None
    classes: list[str] | None = None
    images: np.ndarray | None = None  # (N, 3, H, W) uint8 memory map, for galbench catalogs
    bands: str = "i,r,g"
    pixscale: float | None = None
    source: str = ""
    images_offset: int | None = field(default=None, repr=False)  # byte offset of the image cube in the file

    def __len__(self) -> int:
        return len(self.table)

    @property
    def path_column(self) -> str | None:
        """The column of image paths, where the images are files."""
        return next((c for c in PATH_COLUMNS if c in self.table.colnames), None)

    def row_name(self, row: int) -> str:
        """'row R (objid X)' or 'row R', for messages."""
        return f"row {row} (objid {self.table['objid'][row]})" if "objid" in self.table.colnames else f"row {row}"


def table_format(path: Path) -> str:
    """The astropy format name for a table file, from its extension."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise GalbenchError(f"unknown table format {suffix!r}", where=str(path),
                            fix=f"use one of {', '.join(sorted(FORMATS))}")
    fmt = FORMATS[suffix]
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise GalbenchError("Parquet tables need pyarrow, which is not installed", where=str(path),
                                fix="pip install pyarrow, or use FITS, VOTable or CSV") from None
    return fmt


def _open_tables(path: Path) -> tuple[fits.HDUList, int, list[str]]:
    """The file opened (headers read, data memory-mapped), the index of its CATALOG HDU, else of its first
    binary table, and its HDU names."""
    hdul = open_hdus(path)
    names = [hdu.name for hdu in hdul]
    tables = [k for k, hdu in enumerate(hdul) if isinstance(hdu, fits.BinTableHDU)]
    if "CATALOG" in names and names.index("CATALOG") in tables:
        return hdul, names.index("CATALOG"), names
    if not tables or "IMAGES" in names:
        hdul.close()
    if not tables:
        raise GalbenchError(f"no binary table HDU (found {names})", where=str(path),
                            fix="a catalog is a FITS binary table with an image_path column, or a galbench catalog")
    if "IMAGES" in names:  # a galbench catalog needs its CATALOG table
        read_catalog(path)  # which says what is wrong with it
        raise GalbenchError("no CATALOG binary table beside the IMAGES cube", where=str(path))
    return hdul, tables[0], names


def _read_fits(path: Path) -> InputCatalog:
    hdul, index, names = _open_tables(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's warnings about units and keywords it cannot parse
        try:
            read = Table.read(hdul, hdu=index, character_as_bytes=False, mask_invalid=False,
                              unit_parse_strict="silent")
            # copied into memory: columns left as views of the file's map would break (SIGBUS) if the input
            # were rewritten while the output is being made
            table = native_byte_order(Table(read, copy=True))
        except (OSError, ValueError, TypeError) as exc:
            hdul.close()
            raise GalbenchError(f"table cannot be read ({str(exc)[:120]})",
                                where=f"{path}[{names[index]}]") from None
    primary = hdul[0].header.copy()
    # astropy leaves TCOMMn in the table's meta; they are the columns' descriptions (TOPCAT shows them)
    for key in [k for k in table.meta if _TCOMM.match(k)]:
        column = int(_TCOMM.match(key).group(1)) - 1
        value = table.meta.pop(key)
        if column < len(table.columns) and not table.columns[column].description:
            table.columns[column].description = str(value)
    table.meta.pop("EXTNAME", None)
    classes_text = table.meta.pop("CLASSES", "")
    result = InputCatalog(path, "fits", table, primary_header=primary,
                          classes=[c.strip() for c in str(classes_text).split(",")] if classes_text else None)
    if "IMAGES" not in names:
        hdul.close()
        return result
    # a galbench catalog: validated as `read_catalog` validates one, its image cube memory-mapped
    refuse_compressed(path)
    catalog = catalog_from_hdus(hdul, table, path)
    result.images, result.bands, result.pixscale, result.source = (catalog.images, catalog.bands,
                                                                   catalog.pixscale, catalog.source)
    result.classes = catalog.classes
    result.images_offset = hdul["IMAGES"].fileinfo()["datLoc"]
    return result


def read_input(path: str | Path) -> InputCatalog:
    """Read a catalog to classify (see the module docstring); bad files get one GalbenchError."""
    path = Path(path)
    if not path.exists():
        raise GalbenchError("file not found", where=str(path))
    fmt = table_format(path)
    if fmt == "fits":
        catalog = _read_fits(path)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = Table.read(path, format=fmt)
        except Exception as exc:  # noqa: BLE001 - each astropy reader raises its own types
            raise GalbenchError(f"cannot read the table ({type(exc).__name__}: {str(exc)[:120]})",
                                where=str(path)) from None
        classes_text = table.meta.get("CLASSES", "")
        catalog = InputCatalog(path, fmt, table,
                               classes=[c.strip() for c in str(classes_text).split(",")] if classes_text else None)
    native_byte_order(catalog.table)
    return catalog


def count_rows(path: str | Path) -> int:
    """Rows of a catalog, cheaply for FITS (its header)."""
    path = Path(path)
    if path.exists() and table_format(path) == "fits":
        hdul, index, _ = _open_tables(path)
        with hdul:
            return int(hdul[index].header["NAXIS2"])
    return len(read_input(path))


def fingerprint(catalog: InputCatalog) -> dict:
    """Size, modification time and a content hash of the input, to tell a replaced input from the same one.

    Files up to 64 MiB are hashed whole. A larger galbench catalog is hashed up to its image cube (headers
    and table) plus 64 image rows spread over the cube; image-path catalogs add the size and modification
    time of 64 of their image files.
    """
    path = catalog.path
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if stat.st_size <= FULL_HASH_BYTES or catalog.images is None:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        else:
            remaining = catalog.images_offset
            while remaining > 0:
                block = handle.read(min(remaining, 1 << 20))
                digest.update(block)
                remaining -= len(block)
            for row in np.linspace(0, len(catalog.images) - 1, SAMPLED_ROWS).astype(int):
                digest.update(np.ascontiguousarray(catalog.images[row]).tobytes())
    if catalog.images is None and catalog.path_column is not None and len(catalog):
        paths = catalog.table[catalog.path_column]
        for row in np.unique(np.linspace(0, len(paths) - 1, SAMPLED_ROWS).astype(int)):
            image = path.parent / str(paths[row])
            try:
                image_stat = image.stat()
                digest.update(f"{row}:{image_stat.st_size}:{image_stat.st_mtime_ns};".encode())
            except OSError:
                digest.update(f"{row}:missing;".encode())
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
