"""Importing real images: the gz1-sdss layout, class folders, Galaxy10 HDF5, bad images."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from galbench.data.catalog import read_catalog


def test_gz1_layout_imports_with_class_map_crop_and_size(cli, gz1_small, tmp_path):
    out = tmp_path / "gz1.fits"
    code, _, err = cli("data", "import", gz1_small, out, "--class-column", "gz1_class", "--map", "elliptical=0",
                       "--map", "spiral=1,2", "--map", "edge-on=3", "--crop", "0.5", "--size", "48")
    assert code == 0, err
    catalog = read_catalog(out)
    assert len(catalog) == 30 and catalog.images.shape == (30, 3, 48, 48)
    assert catalog.class_counts() == {"elliptical": 10, "spiral": 10, "edge-on": 10}
    assert catalog.table["objid"].dtype == np.int64 and catalog.table["objid"][0] > 5 * 10**17
    # the central crop holds the galaxy: brighter in the middle than at the edges
    images = catalog.images.astype(float)
    assert images[:, :, 18:30, 18:30].mean() > images[:, :, :6, :6].mean() + 15


def test_unmapped_labels_are_dropped_and_counted(cli, gz1_small, tmp_path):
    out = tmp_path / "two.fits"
    code, _, err = cli("data", "import", gz1_small, out, "--class-column", "gz1_class", "--map", "elliptical=0",
                       "--map", "edge-on=3", "--size", "32")
    assert code == 0
    assert "dropped 10 rows with unmapped labels" in err
    assert len(read_catalog(out)) == 20


def test_corrupt_image_is_skipped_and_named_or_fatal_with_strict(cli, gz1_small, tmp_path):
    victim = sorted((gz1_small / "images").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])
    out = tmp_path / "skip.fits"
    code, _, err = cli("data", "import", gz1_small, out, "--class-column", "gz1_class", "--map", "a=0",
                       "--map", "b=1,2", "--map", "c=3", "--size", "32")
    assert code == 0 and victim.name in err and "1 bad images" in err
    assert len(read_catalog(out)) == 29
    strict = tmp_path / "strict.fits"
    code, _, err = cli("data", "import", gz1_small, strict, "--class-column", "gz1_class", "--map", "a=0",
                       "--map", "b=1,2", "--map", "c=3", "--size", "32", "--strict")
    assert code == 2 and victim.name in err and not strict.exists()


def test_class_folder_layout(cli, gz1_small, tmp_path):
    root = tmp_path / "by-class"
    images = sorted((gz1_small / "images").iterdir())
    for name, chunk in (("round", images[:4]), ("disc", images[4:9])):
        (root / name).mkdir(parents=True)
        for path in chunk:
            shutil.copy(path, root / name / path.name)
    out = tmp_path / "folders.fits"
    assert cli("data", "import", root, out, "--size", "32")[0] == 0
    catalog = read_catalog(out)
    assert catalog.classes == ["disc", "round"] and catalog.class_counts() == {"disc": 5, "round": 4}


def test_galaxy10_hdf5(cli, tmp_path):
    h5py = pytest.importorskip("h5py", reason="h5py (the hdf5 extra) is not installed")
    rng = np.random.default_rng(0)
    path = tmp_path / "Galaxy10.h5"
    with h5py.File(path, "w") as handle:
        handle["images"] = rng.integers(0, 256, (6, 69, 69, 3), dtype=np.uint8)
        handle["ans"] = np.array([0, 1, 2, 9, 4, 5], dtype=np.uint8)
        handle["ra"] = rng.uniform(0, 360, 6)
        handle["dec"] = rng.uniform(-10, 10, 6)
    out = tmp_path / "g10.fits"
    assert cli("data", "import", path, out, "--size", "64")[0] == 0
    catalog = read_catalog(out)
    assert catalog.images.shape == (6, 3, 64, 64) and catalog.classes[9] == "edge-on-with-bulge"
    assert list(catalog.labels) == [0, 1, 2, 9, 4, 5] and "ra" in catalog.table.colnames


def test_bad_map_is_rejected(cli, gz1_small, tmp_path):
    code, _, err = cli("data", "import", gz1_small, tmp_path / "x.fits", "--class-column", "gz1_class",
                       "--map", "spiral")
    assert code == 2 and "NAME=LABEL" in err
    code, _, err = cli("data", "import", gz1_small, tmp_path / "x.fits", "--class-column", "nope", "--map", "a=0")
    assert code == 2 and "missing column 'nope'" in err


def _labelled_folder(root, rows, header="objid,label", bom=False):
    """A folder of random 16x16 PNGs named by objid, with a labels CSV of `rows` (objid, label)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for objid, _ in rows:
        path = root / "images" / f"{objid}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    text = "\n".join([header] + [f"{objid},{label}" for objid, label in rows]) + "\n"
    (root / "labels.csv").write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return root


def test_repeated_objids_are_one_line_or_kept_once_with_dedupe(cli, tmp_path):
    rows = [(101, 0), (102, 1), (101, 1), (103, 0), (103, 0), (104, 1)]
    source = _labelled_folder(tmp_path / "dups", rows)
    out = tmp_path / "dups.fits"
    code, _, err = cli("-q", "data", "import", source, out, "--map", "a=0", "--map", "b=1")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "2 objids appear more than once, 1 of them with conflicting labels (101)" in lines[0]
    assert "--dedupe first" in lines[0] and not out.exists()
    code, _, err = cli("data", "import", source, out, "--map", "a=0", "--map", "b=1", "--dedupe", "first")
    assert code == 0 and "2 repeated objids" in err
    catalog = read_catalog(out)
    assert list(catalog.table["objid"]) == [101, 102, 103, 104] and list(catalog.labels) == [0, 1, 0, 1]


def test_repeated_objids_across_class_folders_are_refused(cli, tmp_path):
    for name in ("disc", "round"):
        (tmp_path / "folders" / name).mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(tmp_path / "folders" / name / "555.png")
    code, _, err = cli("data", "import", tmp_path / "folders", tmp_path / "x.fits")
    assert code == 2 and "1 objids appear more than once, 1 of them with conflicting labels (555)" in err


def test_16_bit_greyscale_png_is_scaled_by_its_own_range(tmp_path):
    from galbench.data.importers import load_image

    # a 16-bit image whose values span 1000..40000: PIL's own conversion clips most pixels at 255
    values = np.linspace(1000, 40000, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    image, filled = load_image(path)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and filled == 0
    expected = np.round((values - 1000.0) / 39000.0 * 255).astype(np.uint8)  # hand computation
    np.testing.assert_array_equal(image[..., 0], expected)
    assert (image == 255).mean() < 0.01 and image.min() == 0


def test_labels_csv_with_a_byte_order_mark(cli, tmp_path):
    source = _labelled_folder(tmp_path / "bom", [(1, "x"), (2, "y"), (3, "x")], bom=True)
    out = tmp_path / "bom.fits"
    code, _, err = cli("data", "import", source, out, "--map", "ex=x", "--map", "why=y")
    assert code == 0, err
    assert list(read_catalog(out).labels) == [0, 1, 0]


def test_labels_without_map_make_one_class_per_value(cli, tmp_path):
    source = _labelled_folder(tmp_path / "plain", [(1, 10), (2, 2), (3, 10), (4, 0)])
    elsewhere = tmp_path / "mine.csv"
    (source / "labels.csv").rename(elsewhere)
    out = tmp_path / "plain.fits"
    code, _, err = cli("data", "import", source, out, "--labels", elsewhere)
    assert code == 0, err
    catalog = read_catalog(out)
    assert catalog.classes == ["0", "2", "10"]  # numeric order
    assert list(catalog.labels) == [2, 1, 2, 0]
