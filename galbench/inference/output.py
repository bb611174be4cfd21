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

import numpy as np
from astropy.io import fits
from astropy.table import Column, MaskedColumn, Table

from galbench import __version__
from galbench.errors import GalbenchError
from galbench.fileio import atomic_path
from galbench.inference.inputs import table_format

HISTORY_WIDTH = 70


def provenance() -> dict[str, str]:
    """DATE (UTC, ISO 8601), ORIGIN and CREATOR for a file galbench writes."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0, tzinfo=None)
    return {"DATE": now.isoformat(), "ORIGIN": "galbench", "CREATOR": f"galbench {__version__}"}


def check_writable(path: Path, table_has_vectors: bool, mixin_columns: list[str] = ()) -> str:
    """The astropy format for an output path; refuse up front what the format cannot hold."""
    fmt = table_format(path)
    if fmt == "ascii.csv" and table_has_vectors:
        raise GalbenchError("CSV cannot hold the embedding vectors", where=str(path),
                            fix="write .fits, .ecsv, .xml or .parquet, or drop --embeddings")
    if fmt == "votable" and mixin_columns:
        raise GalbenchError(f"VOTable cannot hold the input's column(s) {', '.join(mixin_columns)} (astropy "
                            "times, sky coordinates or other mixin columns)", where=str(path),
                            fix="write .fits, .ecsv or .parquet")
    return fmt


def mixin_columns(table: Table) -> list[str]:
    """The table's columns that are not plain columns: times, sky coordinates, quantities and the like."""
    return [name for name in table.colnames if not isinstance(table[name], Column)]


def _history_cards(lines: list[str]) -> list[str]:
    """HISTORY values, long lines wrapped to fit a card."""
    cards = []
    for line in lines:
        cards += [line[i:i + HISTORY_WIDTH] for i in range(0, len(line), HISTORY_WIDTH)] or [""]
    return cards


def table_hdu(table: Table, cards: dict, history: list[str], rows: bool = True) -> fits.BinTableHDU:
    """The CATALOG HDU: standard column keywords, TCOMMn descriptions, the given cards and HISTORY (with
    `rows=False`, the same header over no rows)."""
    with warnings.catch_warnings():
        # astropy warns about long column names and keywords (HIERARCH cards); neither matters here
        warnings.simplefilter("ignore")
        # astropy's own FITS writer first encodes column descriptions (and mixin columns) into its
        # serialized-columns header block, so that Table.read gets them back; do the same
        from astropy.io.fits.connect import _encode_mixins

        encoded = _encode_mixins(table if rows else table[:0])  # a mixin may become several columns
        hdu = fits.table_to_hdu(encoded, character_as_bytes=False)
        hdu.name = "CATALOG"
        for index, column in enumerate(encoded.columns.values(), start=1):
            if column.info.description:
                hdu.header[f"TCOMM{index}"] = str(column.info.description)[:68]
        for key, value in cards.items():
            hdu.header[key] = value
        for line in _history_cards(history):
            hdu.header.add_history(line)
    return hdu


# FITS binary table codes galbench writes itself, and the numpy type each is stored as
_STORED = {"I": ">i2", "J": ">i4", "K": ">i8", "B": "u1", "E": ">f4", "D": ">f8", "L": "i1"}


def fits_records(table: Table, header: fits.Header) -> np.ndarray | None:
    """The table's rows as a binary table HDU with `header` stores them: big-endian records, text as ASCII
    bytes, flags as 'T'/'F', masked integers as their TNULL and masked floats as NaN, one vectorised pass
    per column. None where a column needs astropy's own conversion (scaled or offset integers, variable-length
    arrays, masked text or flags, non-ASCII text), or where the layout would differ from the header's."""
    from astropy.io.fits.connect import _encode_mixins

    encoded = table
    if mixin_columns(table):  # Quantity, SkyCoord, ...: encoded as astropy's writer encodes them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoded = _encode_mixins(table)
    if len(encoded.columns) != header.get("TFIELDS"):
        return None
    fields, values = [], []
    for index, name in enumerate(encoded.colnames, start=1):
        column, tform = encoded[name], str(header.get(f"TFORM{index}", ""))
        if header.get(f"TTYPE{index}") != name or f"TZERO{index}" in header or f"TSCAL{index}" in header:
            return None
        code, repeat = tform[-1:], int(tform[:-1] or 1)
        data = np.asarray(column)
        if isinstance(column, MaskedColumn) and np.ma.getmaskarray(column).any():
            if data.dtype.kind == "f":
                data = column.filled(np.nan)
            elif data.dtype.kind in "iu" and f"TNULL{index}" in header:
                data = column.filled(header[f"TNULL{index}"])
            else:
                return None
        if code == "A" and data.dtype.kind in "US" and data.ndim == 1 and repeat > 0:
            data = _ascii(data, repeat)
            if data is None:
                return None
            stored = data.dtype.str
        elif code in _STORED and data.dtype.kind in ("b" if code == "L" else "iuf"):
            stored = _STORED[code]
            if code == "L":
                data = np.where(data, np.int8(ord("T")), np.int8(ord("F")))
            if np.dtype(stored).kind != data.dtype.kind or np.dtype(stored).itemsize != data.dtype.itemsize:
                return None  # a type astropy stores differently (int8 as offset bytes, say)
            if int(np.prod(data.shape[1:], dtype=int)) != repeat:
                return None
        else:
            return None
        fields.append((name, stored, data.shape[1:]) if code != "A" else (name, stored))
        values.append(data)
    records = np.empty(len(encoded), dtype=fields)
    if records.dtype.itemsize != header.get("NAXIS1"):
        return None
    for (name, *_), data in zip(fields, values, strict=True):
        records[name] = data
    return records


def _ascii(text: np.ndarray, width: int) -> np.ndarray | None:
    """Text as FITS stores it: `width` bytes a value, NUL-padded, trailing blanks turned to NULs as astropy's
    writer turns them (never the first character); None where a character is not ASCII.

    Unicode is converted by viewing its UCS-4 code points as integers: numpy's own conversion (astype)
    encodes value by value, and took longer than the rest of a classified catalog's records together.
    """
    if text.dtype.kind == "S":
        stored = np.ascontiguousarray(text.astype(f"S{width}")).view(np.uint8).reshape(len(text), width)
    else:
        chars = text.dtype.itemsize // 4
        stored = np.zeros((len(text), width), np.uint8)
        if chars:
            codes = np.ascontiguousarray(text, dtype=f"=U{chars}").view(np.uint32).reshape(len(text), chars)
            if codes.size and codes.max() > 127:
                return None
            stored[:, :min(chars, width)] = codes[:, :width]
    followed_by_nul = np.ones(len(text), bool)
    for position in range(width - 1, 0, -1):
        column = stored[:, position]
        column[followed_by_nul & (column == ord(" "))] = 0
        followed_by_nul = column == 0
    return stored.view(f"S{width}").reshape(len(text))


def _write_table_file(path: Path, primary: fits.PrimaryHDU, header: fits.Header, records: np.ndarray) -> None:
    """A FITS file of the primary HDU (written by astropy, which checks its header) and one binary table:
    `header` (astropy's, for no rows) with its row count, then the records, each part padded to 2880 bytes.
    Writing the records as they are is what makes a large catalog quick to write."""
    header = header.copy()
    header["NAXIS2"] = len(records)
    primary.header["EXTEND"] = True
    with open(path, "wb") as handle:
        fits.HDUList([primary]).writeto(handle)
        handle.write(header.tostring().encode("ascii"))
        handle.write(records.view(np.uint8))
        handle.write(bytes(-records.nbytes % 2880))


def write_output(path: str | Path, table: Table, primary_header: fits.Header | None, cards: dict,
                 history: list[str], images: fits.ImageHDU | None = None) -> Path:
    """Write a classified catalog atomically, in the format of the path's extension."""
    path = Path(path)
    vectors = any(table[c].ndim > 1 for c in table.colnames)
    fmt = check_writable(path, vectors, mixin_columns(table))
    stamp = provenance()
    if fmt == "fits":
        primary = fits.PrimaryHDU(header=primary_header.copy() if primary_header is not None else None)
        for key, value in stamp.items():
            if key not in primary.header:
                primary.header[key] = value
        header, records = None, None
        if images is None:  # the rows written as records where they can be; astropy writes the rest
            header = table_hdu(table, {**stamp, **cards}, history, rows=False).header
            records = fits_records(table, header)
        with atomic_path(path) as tmp:
            if records is None:
                hdus = [primary, table_hdu(table, {**stamp, **cards}, history)]
                fits.HDUList(hdus + ([images] if images is not None else [])).writeto(tmp, overwrite=True)
            else:
                _write_table_file(tmp, primary, header, records)
        return path
    out = table.copy(copy_data=False)
    out.meta.update({**stamp, **cards})
    out.meta["HISTORY"] = list(out.meta.get("HISTORY", [])) + history
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # VOTable and CSV drop the meta they cannot hold, with a warning
        out.write(tmp, format=fmt, overwrite=True)
    return path

