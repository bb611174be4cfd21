"""Real data from the network: catalogs from VizieR, colour cutouts from the SDSS SkyServer, fetched politely.

- Catalogs: the Nair & Abraham (2010) table (VizieR J/ApJS/186/427, table2) through VizieR's VOTable
  interface, or any local table (FITS, CSV, VOTable) with ra/dec columns.
- Cutouts: SkyServer's ImgCutout service (JPEG, i/r/g -> R/G/B with the Lupton stretch), a bounded number of
  parallel requests over reused connections (urllib3), timeouts, retries with exponential backoff on
  timeouts, connection errors, 429 and 5xx (honouring Retry-After), redirects followed, every answer checked to be a decodable JPEG of the requested size (an HTML error page, an empty
  body or a truncated image is a failure, never a training image).
- A cache keyed by (ra, dec, scale, size, release) that every finished image enters at once, so a rerun or an
  interrupted run fetches nothing twice.

Base URLs are configuration: command-line options, or GALBENCH_VIZIER_URL and GALBENCH_SKYSERVER_URL.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import urllib3
from astropy.table import Table
from PIL import Image

from galbench.data.catalog import Catalog
from galbench.errors import GalbenchError
from galbench.fileio import atomic_path, cache_dir

VIZIER_URL = "https://vizier.cds.unistra.fr"
SKYSERVER_URL = "https://skyserver.sdss.org/{release}"
NAIR_ABRAHAM = "J/ApJS/186/427/table2"

# Class schemes from the Nair & Abraham T-type (de Vaucouleurs-like: -5 E, -3..0 S0, 1..9 spirals, 10 Im,
# 99 unclassifiable), following the 3-way and 4-way splits of Cavanagh et al. (2021) on this catalog.
SCHEMES: dict[str, dict[str, tuple[float, float]]] = {
    "3way": {"elliptical": (-6, -4), "lenticular": (-3, 0), "spiral": (1, 9)},
    "4way": {"elliptical": (-6, -4), "lenticular": (-3, 0), "spiral": (1, 9), "irregular-other": (10, 99)},
}


def labels_from_ttype(ttype: np.ndarray, scheme: str | dict[str, tuple[float, float]]) -> tuple[list[str], np.ndarray]:
    """Class names and a label per row (-1 where the T-type falls in no bin) from a named or custom scheme."""
    bins = SCHEMES.get(scheme) if isinstance(scheme, str) else scheme
    if bins is None:
        raise GalbenchError(f"unknown class scheme {scheme!r}", fix=f"choose from {', '.join(SCHEMES)}")
    labels = np.full(len(ttype), -1, dtype=np.int16)
    values = np.asarray(ttype, dtype=float)
    for index, (low, high) in enumerate(bins.values()):
        labels[(values >= low) & (values <= high) & (labels < 0)] = index
    return list(bins), labels


def _find_column(table: Table, names: tuple[str, ...], what: str, where: str) -> str:
    lower = {c.lower(): c for c in table.colnames}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    raise GalbenchError(f"no {what} column (looked for {', '.join(names)}; found {', '.join(table.colnames)})",
                        where=where)


def normalise_catalog(table: Table, where: str) -> Table:
    """A table with `objid`, `ra`, `dec` (deg) and, where present, `ttype`; other columns kept."""
    out = Table()
    ra = _find_column(table, ("ra", "_RA", "RAJ2000", "RA_ICRS", "RAdeg"), "ra", where)
    dec = _find_column(table, ("dec", "_DE", "DEJ2000", "DE_ICRS", "DEdeg"), "dec", where)
    try:
        objid = _find_column(table, ("objid", "objID", "SDSS", "JID", "Name", "id"), "objid", where)
        out["objid"] = np.asarray(table[objid]).astype(str) if table[objid].dtype.kind in "OUS" else \
            np.asarray(table[objid], dtype=np.int64)
    except GalbenchError:
        out["objid"] = np.arange(len(table), dtype=np.int64)
    out["ra"] = np.asarray(table[ra], dtype=float)
    out["dec"] = np.asarray(table[dec], dtype=float)
    bad = np.flatnonzero(~np.isfinite(out["ra"]) | ~np.isfinite(out["dec"]) | (np.abs(out["dec"]) > 90))
    if bad.size:
        raise GalbenchError(f"{bad.size} rows have no usable coordinates (first: row {bad[0]}, ra "
                            f"{out['ra'][bad[0]]:g}, dec {out['dec'][bad[0]]:g})", where=where,
                            fix="ra and dec are in degrees, dec within [-90, 90]")
    for column in table.colnames:
        if column not in (ra, dec) and column not in out.colnames:
            out[column.lower() if column in ("TType", "T") else column] = table[column]
    if "ttype" not in out.colnames:
        for name in ("TType", "T", "ttype"):
            if name in table.colnames:
                out["ttype"] = np.asarray(table[name], dtype=float)
    return out


def fetch_vizier(source: str = NAIR_ABRAHAM, base_url: str | None = None, timeout: float = 60.0,
                 retries: int = 3) -> Table:
    """A whole VizieR table as an astropy Table (VOTable over HTTP), cached on disk."""
    from astropy.io.votable import parse_single_table

    base = (base_url or os.environ.get("GALBENCH_VIZIER_URL") or VIZIER_URL).rstrip("/")
    query = urllib.parse.urlencode({"-source": source, "-out.max": "unlimited", "-out.all": "",
                                    "-out.add": "_RA,_DE", "-oc.form": "d"})
    url = f"{base}/viz-bin/votable?{query}"
    cached = cache_dir("vizier") / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".vot")
    if not cached.exists():
        try:
            body = _get(connection_pool(1, timeout, retries), url, retries)
        except FetchError as exc:
            raise GalbenchError(f"VizieR cannot be reached: {exc}", where=url,
                                fix="check the network, or --vizier-url / $GALBENCH_VIZIER_URL") from None
        try:
            parse_single_table(io.BytesIO(body))
        except Exception as exc:  # noqa: BLE001 - astropy raises several types for bad VOTables
            raise GalbenchError(f"VizieR answered with something that is not a VOTable ({type(exc).__name__})",
                                where=url) from None
        with atomic_path(cached) as tmp:
            tmp.write_bytes(body)
    return parse_single_table(str(cached)).to_table()


def read_table(path: str | Path) -> Table:
    """A local catalog table: FITS, CSV or VOTable, by its suffix."""
    path = Path(path)
    if not path.exists():
        raise GalbenchError("catalog table not found", where=str(path))
    suffix = path.suffix.lower()
    if suffix == ".gz":  # astropy reads gzipped tables itself (only image cubes need memory maps)
        suffix = Path(path.stem).suffix.lower()
    formats = {".fits": "fits", ".fit": "fits", ".csv": "ascii.csv", ".vot": "votable", ".xml": "votable"}
    if suffix not in formats:
        raise GalbenchError(f"unknown table format {suffix!r}", where=str(path), fix="use .fits, .csv or .vot")
    try:
        return Table.read(path, format=formats[suffix])
    except Exception as exc:  # noqa: BLE001
        raise GalbenchError(f"cannot read the table ({type(exc).__name__}: {exc})", where=str(path)) from None


class FetchError(Exception):
    """One cutout could not be fetched or was not a valid image; the reason is the message."""


USER_AGENT = "galbench (+https://pypi.org/project/galbench)"
RETRY_STATUSES = (429, *range(500, 600))  # too many requests, and every server error


def connection_pool(workers: int, timeout: float, retries: int, backoff: float = 0.5) -> urllib3.PoolManager:
    """Reused connections for `workers` parallel requests, retrying timeouts, connection errors, 429 and 5xx
    with exponential backoff (and a server's Retry-After), following redirects."""
    retry = urllib3.Retry(total=None, connect=retries, read=retries, status=retries, other=0, redirect=5,
                          status_forcelist=RETRY_STATUSES, allowed_methods=["GET"], backoff_factor=backoff,
                          respect_retry_after_header=True, raise_on_status=False)
    return urllib3.PoolManager(num_pools=4, maxsize=max(1, workers), block=True, retries=retry,
                               timeout=urllib3.Timeout(connect=timeout, read=timeout),
                               headers={"User-Agent": USER_AGENT})


def _get(pool: urllib3.PoolManager, url: str, retries: int) -> bytes:
    """GET a URL's body through the pool's retries; FetchError with the reason where none came."""
    try:
        response = pool.request("GET", url)
    except urllib3.exceptions.MaxRetryError as exc:
        attempts = retries + 1
        reason = exc.reason
        # a refused connection is a NewConnectionError, which urllib3 also makes a ConnectTimeoutError
        if isinstance(reason, urllib3.exceptions.TimeoutError) and \
                not isinstance(reason, urllib3.exceptions.NewConnectionError):
            raise FetchError(f"timed out after {attempts} attempts") from None
        if isinstance(reason, urllib3.exceptions.ResponseError):
            raise FetchError(str(reason)) from None
        detail = str(reason).rsplit("connection: ", 1)[-1]
        raise FetchError(f"connection failed ({detail}) after {attempts} attempts") from None
    except urllib3.exceptions.HTTPError as exc:
        raise FetchError(f"connection failed ({type(exc).__name__})") from None
    if response.status >= 300:
        attempts = len(response.retries.history) + 1 if response.retries else 1
        raise FetchError(f"HTTP {response.status} after {attempts} attempts")
    return response.data


def validate_jpeg(body: bytes, width: int, height: int) -> np.ndarray:
    """Decode a cutout; raise FetchError unless it is a complete JPEG of the requested size."""
    if not body:
        raise FetchError("empty body")
    if not body.startswith(b"\xff\xd8"):
        kind = "an HTML page" if body.lstrip()[:1] == b"<" else "not a JPEG"
        raise FetchError(f"answer is {kind}")
    try:
        with Image.open(io.BytesIO(body)) as image:
            if image.format != "JPEG":
                raise FetchError(f"answer is {image.format}, not JPEG")
            image.load()  # a truncated JPEG raises here (PIL does not pad truncated files by default)
            array = np.asarray(image.convert("RGB"))
    except FetchError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL's many decode errors
        raise FetchError(f"undecodable JPEG ({exc})") from None
    if array.shape[:2] != (height, width):
        raise FetchError(f"image is {array.shape[1]}x{array.shape[0]}, asked for {width}x{height}")
    return array


@dataclass(frozen=True)
class CutoutSpec:
    """What a cutout request asks for."""

    width: int = 224
    height: int = 224
    release: str = "dr17"
    base_url: str | None = None

    def url(self, ra: float, dec: float, scale: float) -> str:
        """The ImgCutout URL of one galaxy."""
        base = (self.base_url or os.environ.get("GALBENCH_SKYSERVER_URL") or SKYSERVER_URL)
        base = base.format(release=self.release).rstrip("/")
        query = urllib.parse.urlencode({"ra": f"{ra:.6f}", "dec": f"{dec:.6f}", "scale": f"{scale:.5f}",
                                        "width": self.width, "height": self.height})
        return f"{base}/SkyServerWS/ImgCutout/getjpeg?{query}"

    def cache_path(self, ra: float, dec: float, scale: float) -> Path:
        """Where a cutout is cached: keyed by position, scale, size and data release."""
        key = f"{ra:.6f},{dec:.6f},{scale:.5f},{self.width}x{self.height},{self.release}"
        return cache_dir("cutouts") / self.release / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".jpeg")


@dataclass
class FetchReport:
    """How a fetch went: counts, and every failure with its reason."""

    fetched: int = 0
    cached: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)  # (row, reason)


def fetch_cutouts(ra: np.ndarray, dec: np.ndarray, scale: np.ndarray, spec: CutoutSpec, workers: int = 4,
                  timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                  progress: Callable[[int], None] | None = None) -> tuple[list[Path | None], FetchReport]:
    """Fetch (or find in the cache) every cutout; returns each row's cached file (None where it failed)."""
    report = FetchReport()
    paths: list[Path | None] = [None] * len(ra)
    connections = connection_pool(workers, timeout, retries, backoff)

    def one(row: int):
        target = spec.cache_path(ra[row], dec[row], scale[row])
        if target.exists():
            return row, target, "cached"
        try:
            body = _get(connections, spec.url(ra[row], dec[row], scale[row]), retries)
            validate_jpeg(body, spec.width, spec.height)
        except FetchError as exc:
            return row, None, str(exc)
        with atomic_path(target) as tmp:
            tmp.write_bytes(body)
        return row, target, "fetched"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for row, path, outcome in pool.map(one, range(len(ra))):
            paths[row] = path
            if outcome == "cached":
                report.cached += 1
            elif outcome == "fetched":
                report.fetched += 1
            else:
                report.failed.append((row, outcome))
            if progress:
                progress(1)
    return paths, report


def build_catalog(table: Table, scheme: str | None, spec: CutoutSpec, scale: float | None = 0.4,
                  scale_column: str | None = None, scale_factor: float = 0.024, workers: int = 4,
                  timeout: float = 30.0, retries: int = 3, progress=None,
                  source: str = "") -> tuple[Catalog, FetchReport, Table]:
    """Fetch cutouts for a normalised table and assemble a catalog of the rows that succeeded.

    Returns the catalog, the fetch report and a table of the failed rows (objid, ra, dec, reason).
    """
    if scale_column:
        if scale_column not in table.colnames:
            raise GalbenchError(f"no scale column {scale_column!r}", fix=f"columns: {', '.join(table.colnames)}")
        # as Galaxy Zoo did: arcsec per pixel proportional to the galaxy's size (e.g. 0.024 * petroR90_r)
        scales = np.asarray(table[scale_column], dtype=float) * scale_factor
    else:
        scales = np.full(len(table), float(scale))
    if "ttype" in table.colnames and scheme:
        classes, labels = labels_from_ttype(table["ttype"], scheme)
    elif "label" in table.colnames:
        labels = np.asarray(table["label"], dtype=np.int16)
        classes = [f"class{k}" for k in range(int(labels.max()) + 1)] if labels.max() >= 0 else ["unknown"]
    else:
        classes, labels = ["unknown"], np.full(len(table), -1, dtype=np.int16)
    paths, report = fetch_cutouts(np.asarray(table["ra"], float), np.asarray(table["dec"], float), scales, spec,
                                  workers, timeout, retries, progress=progress)
    good = np.asarray([p is not None for p in paths])
    images = np.stack([np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in paths if p is not None]) \
        if good.any() else np.zeros((0, 3, spec.height, spec.width), np.uint8)
    kept = table[good]
    kept["label"] = labels[good]
    kept["pixscale"] = scales[good]
    failed = Table({"objid": table["objid"][[row for row, _ in report.failed]] if report.failed else [],
                    "ra": [table["ra"][row] for row, _ in report.failed],
                    "dec": [table["dec"][row] for row, _ in report.failed],
                    "reason": [reason for _, reason in report.failed]})
    catalog = Catalog(table=kept, classes=classes, images=images, bands="i,r,g",
                      pixscale=float(np.median(scales)) if len(scales) else None,
                      source=source or f"SDSS SkyServer {spec.release} ImgCutout")
    return catalog, report, failed
