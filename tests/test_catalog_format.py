"""The galaxy-catalog FITS format: round trips, laziness, and the files synth and import make."""

from __future__ import annotations

import mmap

import numpy as np
from astropy.io import fits

from galbench.data.catalog import read_catalog, write_catalog
from tests.conftest import make_catalog


def test_round_trip_keeps_table_classes_images_and_headers(tmp_path):
    catalog = make_catalog()
    path = tmp_path / "c.fits"
    write_catalog(path, catalog)
    back = read_catalog(path)
    assert back.classes == ["a", "b", "c"]
    assert back.bands == "i,r,g" and back.pixscale == 0.396 and back.source == "test"
    np.testing.assert_array_equal(back.images, catalog.images)
    np.testing.assert_array_equal(back.table["objid"], catalog.table["objid"])
    np.testing.assert_allclose(back.table["extra"], catalog.table["extra"])
    assert back.table["label"].dtype == np.int16
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "CATALOG", "IMAGES"]
        assert hdul["IMAGES"].header["BITPIX"] == 8
        assert hdul["CATALOG"].header["CLASSES"] == "a,b,c"


def test_string_objids_round_trip(tmp_path):
    catalog = make_catalog(n=3)
    catalog.table["objid"] = np.array(["J1", "J22", "J333"])
    write_catalog(tmp_path / "s.fits", catalog)
    assert list(read_catalog(tmp_path / "s.fits").table["objid"]) == ["J1", "J22", "J333"]


def test_images_are_memory_mapped_not_read(tmp_path):
    path = tmp_path / "big.fits"
    write_catalog(path, make_catalog(n=64, size=64))
    images = read_catalog(path).images
    base = images
    while getattr(base, "base", None) is not None and not isinstance(base, mmap.mmap):
        base = base.base
    assert isinstance(base, mmap.mmap)


def test_catalog_without_images_reads_when_images_not_required(tmp_path):
    path = tmp_path / "cat.fits"
    write_catalog(path, make_catalog(), include_images=False)
    catalog = read_catalog(path, require_images=False)
    assert catalog.images is None and len(catalog) == 12


def test_class_counts_include_unknown(tmp_path):
    catalog = make_catalog(n=6)
    catalog.table["label"][0] = -1
    assert catalog.class_counts() == {"a": 1, "b": 2, "c": 2, "unknown": 1}
