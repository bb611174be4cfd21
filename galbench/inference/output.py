"""Classified catalogs out: FITS that astronomers recognise, or any table format astropy writes.

The format follows the output's extension (FITS, VOTable, CSV, ECSV, Parquet). In FITS the input's primary
header is kept card for card (DATE, ORIGIN and CREATOR are added there only where it lacks them), and the
table HDU `CATALOG` carries the input's columns with their units (TUNITn), nulls (TNULLn), display formats
(TDISPn) and descriptions (TCOMMn, also in astropy's own column metadata), the input table's header cards,
and galbench's provenance: DATE, ORIGIN = 'galbench', CREATOR, MODEL, MODELSHA and HISTORY lines.
"""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path

from astropy.io import fits
from astropy.table import Table

from galbench import __version__
from galbench.errors import GalbenchError
from galbench.fileio import atomic_path
from galbench.inference.inputs import table_format

HISTORY_WIDTH = 70


def provenance() -> dict[str, str]:
    """DATE (UTC, ISO 8601), ORIGIN and CREATOR for a file galbench writes."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0, tzinfo=None)
    return {"DATE": now.isoformat(), "ORIGIN": "galbench", "CREATOR": f"galbench {__version__}"}


def check_writable(path: Path, table_has_vectors: bool) -> str:
    """The astropy format for an output path; refuse up front what the format cannot hold."""
    fmt = table_format(path)
    if fmt == "ascii.csv" and table_has_vectors:
        raise GalbenchError("CSV cannot hold the embedding vectors", where=str(path),
                            fix="write .fits, .ecsv, .xml or .parquet, or drop --embeddings")
    return fmt


def _history_cards(lines: list[str]) -> list[str]:
    """HISTORY values, long lines wrapped to fit a card."""
    cards = []
    for line in lines:
        cards += [line[i:i + HISTORY_WIDTH] for i in range(0, len(line), HISTORY_WIDTH)] or [""]
    return cards


def table_hdu(table: Table, cards: dict, history: list[str]) -> fits.BinTableHDU:
    """The CATALOG HDU: standard column keywords, TCOMMn descriptions, the given cards and HISTORY."""
    with warnings.catch_warnings():
        # astropy warns about long column names and keywords (HIERARCH cards); neither matters here
        warnings.simplefilter("ignore")
        # astropy's own FITS writer first encodes column descriptions (and mixin columns) into its
        # serialized-columns header block, so that Table.read gets them back; do the same
        from astropy.io.fits.connect import _encode_mixins

        hdu = fits.table_to_hdu(_encode_mixins(table), character_as_bytes=False)
        hdu.name = "CATALOG"
        for index, column in enumerate(table.columns.values(), start=1):
            if column.description:
                hdu.header[f"TCOMM{index}"] = str(column.description)[:68]
        for key, value in cards.items():
            hdu.header[key] = value
        for line in _history_cards(history):
            hdu.header.add_history(line)
    return hdu


def write_output(path: str | Path, table: Table, primary_header: fits.Header | None, cards: dict,
                 history: list[str], images: fits.ImageHDU | None = None) -> Path:
    """Write a classified catalog atomically, in the format of the path's extension."""
    path = Path(path)
    vectors = any(table[c].ndim > 1 for c in table.colnames)
    fmt = check_writable(path, vectors)
    stamp = provenance()
    if fmt == "fits":
        primary = fits.PrimaryHDU(header=primary_header.copy() if primary_header is not None else None)
        for key, value in stamp.items():
            if key not in primary.header:
                primary.header[key] = value
        hdus = [primary, table_hdu(table, {**stamp, **cards}, history)] + ([images] if images is not None else [])
        with atomic_path(path) as tmp:
            fits.HDUList(hdus).writeto(tmp, overwrite=True)
        return path
    out = table.copy(copy_data=False)
    out.meta.update({**stamp, **cards})
    out.meta["HISTORY"] = list(out.meta.get("HISTORY", [])) + history
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # VOTable and CSV drop the meta they cannot hold, with a warning
        out.write(tmp, format=fmt, overwrite=True)
    return path

