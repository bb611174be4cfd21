"""The real fetching code against a local server that answers like VizieR and the SkyServer cutout service,
and misbehaves on purpose: 500s, timeouts, truncated JPEGs, HTML with status 200, redirects, empty bodies."""

from __future__ import annotations

import io
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from astropy.io.votable import from_table, writeto
from astropy.table import Table
from PIL import Image

from galbench.data import sdss
from galbench.data.catalog import read_catalog

N_ROWS = 500
# fault by objid % 20: 1 -> 500 once, then fine; 2 -> always 500; 3 -> slower than the timeout; 4 -> truncated
# JPEG; 5 -> HTML page with status 200; 6 -> redirect to a good image; 7 -> empty body; 8 -> wrong size
FAILING = {2: "HTTP 500", 3: "timed out", 4: "undecodable JPEG", 5: "HTML page", 7: "empty body", 8: "asked for"}


def _jpeg(width, height, seed):
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _table():
    rng = np.random.default_rng(1)
    return Table({"JID": [f"J{k:05d}" for k in range(N_ROWS)], "_RA": rng.uniform(120, 240, N_ROWS),
                  "_DE": rng.uniform(0, 60, N_ROWS), "TType": rng.choice([-5, -3, 0, 2, 4, 6, 10, 99], N_ROWS)})


class FakeServices(BaseHTTPRequestHandler):
    table = _table()
    index = {f"{ra:.6f}": k for k, ra in enumerate(table["_RA"])}
    seen: dict[int, int] = {}
    requests = 0

    def log_message(self, *args):
        pass

    def _send(self, status, body, kind="image/jpeg", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # the client gave up on a deliberately slow answer
            pass

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urllib.parse.urlparse(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if url.path == "/viz-bin/votable":
            assert query["-source"] == sdss.NAIR_ABRAHAM
            buffer = io.BytesIO()
            writeto(from_table(self.table), buffer)
            return self._send(200, buffer.getvalue(), "application/x-votable+xml")
        if url.path == "/good.jpeg":
            return self._send(200, _jpeg(int(query["w"]), int(query["h"]), 0))
        assert url.path == "/dr17/SkyServerWS/ImgCutout/getjpeg", url.path
        type(self).requests += 1
        row = self.index[query["ra"]]
        width, height = int(query["width"]), int(query["height"])
        fault = row % 20
        type(self).seen[row] = self.seen.get(row, 0) + 1
        if fault == 1 and self.seen[row] == 1 or fault == 2:
            return self._send(500, b"server error", "text/plain")
        if fault == 3:
            time.sleep(0.6)
        if fault == 4:
            return self._send(200, _jpeg(width, height, row)[:400])
        if fault == 5:
            return self._send(200, b"<html><body>Error: service unavailable</body></html>", "text/html")
        if fault == 6:
            return self._send(302, b"", "text/plain", {"Location": f"/good.jpeg?w={width}&h={height}"})
        if fault == 7:
            return self._send(200, b"")
        if fault == 8:
            return self._send(200, _jpeg(width // 2, height, row))
        return self._send(200, _jpeg(width, height, row))


@pytest.fixture
def services():
    FakeServices.seen, FakeServices.requests = {}, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServices)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_500_rows_with_planted_faults_fetch_completely_and_a_rerun_hits_only_the_cache(cli, services, tmp_path):
    out = tmp_path / "na.fits"
    args = ["data", "sdss", out, "--catalog", "nair-abraham-2010", "--vizier-url", services,
            "--skyserver-url", services + "/{release}", "--width", "64", "--height", "64", "--workers", "8",
            "--timeout", "0.3", "--retries", "2"]
    code, _, err = cli(*args)
    assert code == 0, err
    faults = np.arange(N_ROWS) % 20
    bad = np.isin(faults, list(FAILING))
    catalog = read_catalog(out)
    assert len(catalog) == (~bad).sum()
    assert list(catalog.table["objid"]) == [f"J{k:05d}" for k in np.flatnonzero(~bad)]
    assert catalog.images.shape[1:] == (3, 64, 64)
    # every good image is the server's image for that row, byte for byte after decoding: no bad image slipped in
    for position, row in enumerate(np.flatnonzero(~bad)[:40]):
        if faults[row] == 6:
            continue
        expected = np.asarray(Image.open(io.BytesIO(_jpeg(64, 64, int(row))))).transpose(2, 0, 1)
        np.testing.assert_array_equal(catalog.images[position], expected)
    failed = Table.read(out.with_suffix(".failed.csv"), format="ascii.csv")
    assert len(failed) == bad.sum()
    for objid, reason in zip(failed["objid"], failed["reason"], strict=True):
        assert FAILING[int(objid[1:]) % 20] in reason, (objid, reason)
    assert f"failed {bad.sum()}" in err and f"fetched {(~bad).sum()}" in err
    assert catalog.classes == ["elliptical", "lenticular", "spiral"]
    ttype = np.asarray(catalog.table["ttype"])
    assert ((catalog.labels == 0) == (ttype == -5)).all() and (catalog.labels[ttype >= 10] == -1).all()

    before = FakeServices.requests
    code, _, err = cli(*args)
    assert code == 0 and f"cached {(~bad).sum()}" in err
    # only the failed rows are asked again: 500s and timeouts with 2 retries, invalid images once
    retried = np.isin(faults, [2, 3]).sum()
    assert FakeServices.requests - before == retried * 3 + (bad.sum() - retried)


def test_unreachable_server_is_one_line_and_exit_2(cli, tmp_path):
    code, _, err = cli("data", "sdss", tmp_path / "x.fits", "--catalog", "nair-abraham-2010",
                       "--vizier-url", "http://127.0.0.1:9", "--retries", "0", "--timeout", "1")
    assert code == 2 and "connection failed" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.fits").exists()


def test_local_table_and_scale_per_galaxy(cli, services, tmp_path):
    table = Table({"objid": np.arange(3, dtype=np.int64) + 7, "ra": FakeServices.table["_RA"][[0, 20, 40]],
                   "dec": FakeServices.table["_DE"][[0, 20, 40]], "petroR90_r": [10.0, 20.0, 30.0]})
    path = tmp_path / "mine.csv"
    table.write(path, format="ascii.csv")
    out = tmp_path / "mine.fits"
    code, _, err = cli("data", "sdss", out, "--catalog", path, "--skyserver-url", services + "/{release}",
                       "--width", "32", "--height", "32", "--scale-column", "petroR90_r")
    assert code == 0, err
    catalog = read_catalog(out)
    assert list(catalog.table["pixscale"]) == pytest.approx([0.24, 0.48, 0.72])
    assert list(catalog.labels) == [-1, -1, -1]


def test_class_schemes_and_custom_bins():
    classes, labels = sdss.labels_from_ttype(np.array([-5, -3, 0, 1, 9, 10, 99]), "4way")
    assert classes == ["elliptical", "lenticular", "spiral", "irregular-other"]
    assert labels.tolist() == [0, 1, 1, 2, 2, 3, 3]
    classes, labels = sdss.labels_from_ttype(np.array([-5, 3, 7]), {"early": (-6, 2), "late": (3, 9)})
    assert labels.tolist() == [0, 1, 1]


def test_validation_rejects_every_kind_of_bad_answer():
    good = _jpeg(16, 16, 0)
    assert sdss.validate_jpeg(good, 16, 16).shape == (16, 16, 3)
    for body, reason in ((b"", "empty"), (b"<!DOCTYPE html><p>oops", "HTML"), (good[:150], "undecodable"),
                         (b"GIF89a....", "not a JPEG")):
        with pytest.raises(sdss.FetchError, match=reason):
            sdss.validate_jpeg(body, 16, 16)
    with pytest.raises(sdss.FetchError, match="asked for 32x16"):
        sdss.validate_jpeg(good, 32, 16)


def test_classify_fetch_classifies_a_coordinates_only_catalog(cli, services, finished_suite, tmp_path):
    from galbench.data.catalog import Catalog, write_catalog

    rows = [0, 20, 2, 40]  # row 2 always answers 500
    table = Table({"objid": np.asarray(rows, dtype=np.int64) + 1000,
                   "ra": FakeServices.table["_RA"][rows], "dec": FakeServices.table["_DE"][rows]})
    source = tmp_path / "coords.fits"
    write_catalog(source, Catalog(table, ["elliptical", "spiral", "edge-on"]), include_images=False)
    model = finished_suite / "export" / "winner.onnx"
    out = tmp_path / "coords.out.fits"
    base = ["classify", source, "--model", model, "--out", out, "--fetch", "--skyserver-url",
            services + "/{release}"]
    code, _, err = cli(*base)
    assert code == 2 and "1 cutouts could not be fetched" in err and "objid 1002" in err and not out.exists()
    code, _, err = cli(*base, "--skip-bad")
    assert code == 0, err
    result = read_catalog(out, require_images=False).table
    assert list(result["bad_image"]) == [False, False, True, False]
    assert (result["pred_label"][[0, 1, 3]] >= 0).all() and result["pred_label"][2] == -1
    assert "_cutout_path" not in result.colnames


def test_suite_ttype_bins_make_classes_from_a_ttype_column(tmp_path):
    from galbench.data.catalog import Catalog, write_catalog
    from galbench.data.tensors import map_classes
    from galbench.experiment.suite import load_suite
    from tests.conftest import write_suite

    ttype = np.array([-5, -2, 1, 4, 7, 10, 99])
    table = Table({"objid": np.arange(7, dtype=np.int64), "ttype": ttype.astype(float)})
    path = tmp_path / "na.fits"
    write_catalog(path, Catalog(table, ["unknown"], np.zeros((7, 3, 8, 8), np.uint8)))
    data = f'catalog = "{path}"\nttype_bins = {{ early = [-6, 0], late = [1, 10] }}'
    suite, _ = load_suite(write_suite(tmp_path, data=data))
    classes, labels = map_classes(read_catalog(path), suite.data.classes, suite.data.ttype_bins)
    assert classes == ["early", "late"] and labels.tolist() == [0, 0, 1, 1, 1, 1, -1]


class PoliteServer(BaseHTTPRequestHandler):
    """Keeps connections alive (HTTP/1.1) and answers each cutout's first request with 429 and Retry-After."""

    protocol_version = "HTTP/1.1"
    asked: dict[str, list[float]] = {}
    client_ports: set[int] = set()

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).client_ports.add(self.client_address[1])
        times = type(self).asked.setdefault(self.path, [])
        times.append(time.monotonic())
        if len(times) == 1:
            body, status, headers = b"slow down", 429, {"Retry-After": "1", "Content-Type": "text/plain"}
        else:
            body, status, headers = _jpeg(16, 16, 0), 200, {"Content-Type": "image/jpeg"}
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_429_waits_for_retry_after_and_connections_are_reused(tmp_path):
    PoliteServer.asked, PoliteServer.client_ports = {}, set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), PoliteServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = sdss.CutoutSpec(width=16, height=16, base_url=f"http://127.0.0.1:{server.server_address[1]}/{{release}}")
        ra, dec = np.array([150.0, 151.0, 152.0]), np.array([2.0, 2.5, 3.0])
        # backoff 0 so that only Retry-After can make the client wait
        paths, report = sdss.fetch_cutouts(ra, dec, np.full(3, 0.4), spec, workers=1, timeout=5, retries=2,
                                           backoff=0.0)
    finally:
        server.shutdown()
        server.server_close()
    assert report.fetched == 3 and not report.failed and all(p is not None for p in paths)
    for times in PoliteServer.asked.values():
        assert len(times) == 2 and times[1] - times[0] >= 0.95  # waited as the server asked
    assert len(PoliteServer.client_ports) == 1  # one kept-alive connection for all six requests


def test_429_without_end_fails_after_the_retries():
    class AlwaysBusy(PoliteServer):
        def do_GET(self):  # noqa: N802
            type(self).asked.setdefault(self.path, []).append(time.monotonic())
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()

    AlwaysBusy.asked = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), AlwaysBusy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = sdss.CutoutSpec(width=16, height=16, base_url=f"http://127.0.0.1:{server.server_address[1]}/{{release}}")
        _, report = sdss.fetch_cutouts(np.array([10.0]), np.array([1.0]), np.array([0.4]), spec, workers=1,
                                       timeout=5, retries=2, backoff=0.0)
    finally:
        server.shutdown()
        server.server_close()
    assert report.failed == [(0, "HTTP 429 after 3 attempts")]
    assert [len(t) for t in AlwaysBusy.asked.values()] == [3]


def test_gzipped_local_tables_are_read(tmp_path):
    import gzip

    table = Table({"ra": [10.0, 20.0], "dec": [-5.0, 5.0], "objid": [1, 2]})
    table.write(tmp_path / "coords.csv", format="ascii.csv")
    (tmp_path / "coords.csv.gz").write_bytes(gzip.compress((tmp_path / "coords.csv").read_bytes()))
    read = sdss.read_table(tmp_path / "coords.csv.gz")
    assert list(read["ra"]) == [10.0, 20.0] and list(read["objid"]) == [1, 2]


def test_coordinates_outside_the_sky_are_refused():
    table = Table({"ra": [10.0, 20.0], "dec": [-5.0, 95.0]})
    with pytest.raises(sdss.GalbenchError, match=r"1 rows have no usable coordinates \(first: row 1, ra 20, dec 95\)"):
        sdss.normalise_catalog(table, "mine.csv")
