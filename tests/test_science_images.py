"""FITS science images: one stretch and one resampling rule, from `data import` through export to classify."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from astropy.io import fits
from astropy.table import Table
from astropy.visualization import make_lupton_rgb
from PIL import Image

from galbench.data.catalog import read_catalog, write_catalog
from galbench.data.stretch import parse_stretch
from galbench.data.tensors import prepare_images
from galbench.errors import GalbenchError
from galbench.inference.export import read_metadata
from galbench.models.registry import build_model
from galbench.models.weights import CHECKPOINT_FORMAT
from tests.conftest import make_catalog, write_suite

classify_module = importlib.import_module("galbench.inference.classify")
SIDE = 90  # FITS cutouts of 90 px; imported with --crop 0.8 (72 px) --size 80, the model takes 64 px of crop 0.9


@pytest.fixture(scope="module")
def fits_folder(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """Twelve float32 (3, 90, 90) cutouts, round or elongated, some with NaN and inf pixels; a labels CSV.

    Returns the folder and the number of non-finite pixels of each objid.
    """
    folder = tmp_path_factory.mktemp("science")
    (folder / "images").mkdir()
    rng = np.random.default_rng(3)
    y, x = np.mgrid[:SIDE, :SIDE] - SIDE / 2
    rows, holes = [], {}
    for index in range(12):
        shape = "round" if index % 2 else "long"
        axis = 1.0 if shape == "round" else 0.3
        flux = np.exp(-(x ** 2 + (y / axis) ** 2) / (2 * 8.0 ** 2))
        bands = np.stack([flux * scale for scale in (3.0, 2.0, 1.2)]) + rng.normal(0, 0.05, (3, SIDE, SIDE))
        bands = bands.astype(np.float32)
        if index % 3 == 0:  # a masked block in one band, a dead pixel in another
            bands[1, 20:23, 30:34] = np.nan
            bands[2, 50, 60] = np.inf
        holes[str(1000 + index)] = int((~np.isfinite(bands)).sum())
        fits.PrimaryHDU(bands).writeto(folder / "images" / f"{1000 + index}.fits")
        rows.append(f"{1000 + index},{shape}")
    (folder / "labels.csv").write_text("objid,shape\n" + "\n".join(rows) + "\n")
    return folder, holes


def _import(cli, folder: Path, out: Path, *options) -> Path:
    code, _, err = cli("data", "import", folder, out, "--class-column", "shape", "--workers", "1", *options)
    assert code == 0, err
    return out


def _checkpoint(path: Path, classes: list[str], crop: float = 0.9) -> Path:
    """An untrained alexnet-tiny checkpoint taking 64 px from the central `crop` of its catalog images."""
    torch.manual_seed(0)
    model = build_model("alexnet-tiny", len(classes), 64)
    torch.save({"format": CHECKPOINT_FORMAT, "model": "alexnet-tiny", "classes": classes, "image_size": 64,
                "crop": crop, "state_dict": model.state_dict(), "meta": {}}, path)
    return path


def _record_model_inputs(monkeypatch) -> list[np.ndarray]:
    """The uint8 batches classify will hand its backend, recorded as they are prepared."""
    fed, batch = [], classify_module._Source.batch

    def recorded(source, start, stop):
        prepared = batch(source, start, stop)
        fed.append(np.array(prepared[0]))
        return prepared

    monkeypatch.setattr(classify_module._Source, "batch", recorded)
    return fed


def test_fits_import_stretches_fills_and_records(cli, fits_folder, tmp_path):
    folder, holes = fits_folder
    out = _import(cli, folder, tmp_path / "lupton.fits", "--stretch", "lupton:q=8")
    catalog = read_catalog(out)
    assert fits.getheader(out, "IMAGES")["STRETCH"] == "lupton:q=8,stretch=0.5,minimum=0"
    assert catalog.stretch == "lupton:q=8,stretch=0.5,minimum=0"
    assert catalog.import_crop is None and catalog.import_size is None
    assert list(catalog.table["filled_pixels"]) == [holes[str(objid)] for objid in catalog.table["objid"]]
    assert sum(holes.values()) > 0
    for row in (0, 1):  # one with holes, one without: astropy's Lupton mapping of median-filled bands
        bands = fits.getdata(folder / "images" / f"{catalog.table['objid'][row]}.fits").astype(np.float64)
        for band in bands:
            band[~np.isfinite(band)] = np.median(band[np.isfinite(band)])
        expected = make_lupton_rgb(bands[0], bands[1], bands[2], minimum=0.0, stretch=0.5, Q=8.0)
        np.testing.assert_array_equal(np.asarray(catalog.images[row]).transpose(1, 2, 0), expected)
    cropped = read_catalog(_import(cli, folder, tmp_path / "crop.fits", "--crop", "0.8", "--size", "80"))
    assert (cropped.stretch, cropped.import_crop, cropped.import_size) == ("minmax", 0.8, 80)
    assert cropped.images.shape[1:] == (3, 80, 80)


def test_bad_or_misplaced_stretch_is_one_line(cli, fits_folder, tmp_path):
    folder, _ = fits_folder
    code, _, err = cli("data", "import", folder, tmp_path / "x.fits", "--class-column", "shape", "--stretch", "asinh")
    assert code == 2 and "unknown stretch 'asinh'" in err and len(err.strip().splitlines()) == 1
    h5 = tmp_path / "g10.h5"
    h5.write_bytes(b"")
    code, _, err = cli("data", "import", h5, tmp_path / "y.fits", "--stretch", "lupton")
    assert code == 2 and "Galaxy10 images are 8-bit already" in err
    assert not (tmp_path / "x.fits").exists() and not (tmp_path / "y.fits").exists()


def test_old_catalogs_without_stretch_read_as_minmax(tmp_path):
    path = tmp_path / "old.fits"
    write_catalog(path, make_catalog())
    with fits.open(path, mode="update") as hdul:  # a catalog written before STRETCH existed
        del hdul["IMAGES"].header["STRETCH"]
    old = read_catalog(path)
    assert (old.stretch, old.import_crop, old.import_size) == ("minmax", None, None)
    assert "filled_pixels" not in old.table.colnames
    with fits.open(path, mode="update") as hdul:
        hdul["IMAGES"].header["STRETCH"] = "sinh"
    with pytest.raises(GalbenchError, match=r"old.fits\[IMAGES\]: bad STRETCH header: unknown stretch 'sinh'"):
        read_catalog(path)


@pytest.mark.parametrize("stretch", ["lupton", "percentile:99.5"])
def test_fits_files_classify_as_their_imported_images(cli, monkeypatch, fits_folder, tmp_path, stretch):
    folder, holes = fits_folder
    catalog_file = _import(cli, folder, tmp_path / "cat.fits", "--stretch", stretch, "--crop", "0.8", "--size", "80")
    catalog = read_catalog(catalog_file)
    checkpoint = _checkpoint(tmp_path / "model.pt", catalog.classes)
    model = tmp_path / "model.onnx"
    code, _, err = cli("export", checkpoint, model, "--data", catalog_file)
    assert code == 0, err
    meta = read_metadata(model)
    assert meta["stretch"] == parse_stretch(stretch)
    assert (meta["resampling"]["import_crop"], meta["resampling"]["import_size"]) == (0.8, 80)

    # the same galaxies as FITS files, in a catalog of image paths (relative to it)
    paths = Table({"objid": catalog.table["objid"],
                   "image_path": [f"{folder}/images/{objid}.fits" for objid in catalog.table["objid"]]})
    paths.write(tmp_path / "paths.csv")
    fed = _record_model_inputs(monkeypatch)
    outputs = {}
    for name, source in (("cube", catalog_file), ("files", tmp_path / "paths.csv")):
        code, _, err = cli("classify", source, "--model", model, "--out", tmp_path / f"{name}.fits", "--embeddings")
        assert code == 0, err
        outputs[name] = Table.read(tmp_path / f"{name}.fits", hdu="CATALOG")
    # the model's inputs from the files are, pixel for pixel, what training made of the imported images
    training_inputs = prepare_images(np.asarray(catalog.images), 0.9, 64).numpy()
    np.testing.assert_array_equal(fed[0], training_inputs)
    np.testing.assert_array_equal(fed[1], training_inputs)
    np.testing.assert_array_equal(outputs["files"]["embedding"], outputs["cube"]["embedding"])
    np.testing.assert_array_equal(outputs["files"]["pred_label"], outputs["cube"]["pred_label"])
    assert list(outputs["files"]["filled_pixels"]) == [holes[str(o)] for o in catalog.table["objid"]]
    assert fits.getheader(tmp_path / "files.fits", "CATALOG")["NANFILLD"] == sum(holes.values())

    other = "minmax" if stretch == "lupton" else "percentile:99"
    code, _, err = cli("export", checkpoint, tmp_path / "refused.onnx", "--data", catalog_file, "--stretch", other)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--stretch {other} contradicts the training catalog's stretch" in err
    assert not (tmp_path / "refused.onnx").exists()


def test_a_suite_on_an_imported_catalog_exports_its_stretch(cli, fits_folder, tmp_path):
    folder, _ = fits_folder
    _import(cli, folder, tmp_path / "cat.fits", "--stretch", "lupton:stretch=1", "--size", "64")
    suite = write_suite(tmp_path, name="science", seeds=1, epochs=1, data='catalog = "cat.fits"')
    run = tmp_path / "run"
    code, _, err = cli("run", suite, "--out", run, "--no-report")
    assert code == 0, err
    wanted = parse_stretch("lupton:stretch=1")
    assert read_metadata(run / "export" / "winner.onnx")["stretch"] == wanted
    code, _, err = cli("export", run / "runs" / "scratch__seed0" / "best.pt", tmp_path / "again.onnx", "--run", run)
    assert code == 0, err
    meta = read_metadata(tmp_path / "again.onnx")
    assert meta["stretch"] == wanted and (meta["resampling"]["import_crop"], meta["resampling"]["import_size"]) \
        == (None, 64)


def test_models_exported_before_the_rule_was_recorded_resize_files_as_they_did(cli, monkeypatch, tmp_path):
    """Their metadata said `resampling = "lanczos"`: files went straight to the input size through PIL Lanczos."""
    model = tmp_path / "old.onnx"
    code, _, err = cli("export", _checkpoint(tmp_path / "old.pt", ["a", "b"], crop=1.0), model)
    assert code == 0, err
    proto = onnx.load(str(model))
    next(entry for entry in proto.metadata_props if entry.key == "resampling").value = "lanczos"
    onnx.save(proto, str(model))  # metadata are outside weights_sha256, so the model still reads
    assert read_metadata(model)["resampling"]["import_size"] == 64
    image = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "g.png")
    Table({"image_path": ["g.png"]}).write(tmp_path / "one.csv")
    fed = _record_model_inputs(monkeypatch)
    classify_module.classify(tmp_path / "one.csv", model=model)
    lanczos = np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.LANCZOS))  # the old rule
    np.testing.assert_array_equal(fed[0][0].transpose(1, 2, 0), lanczos)
