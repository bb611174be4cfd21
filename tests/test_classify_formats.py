"""Catalogs in and out: FITS metadata kept, any table format, embeddings, science images, resume, integrity."""

from __future__ import annotations

import importlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table
from PIL import Image

from galbench.data.catalog import Catalog, read_catalog, write_catalog
from galbench.errors import GalbenchError
from galbench.inference.classify import classify
from galbench.inference.export import deployed_from_checkpoint, export_onnx, read_metadata
from galbench.models.weights import load_checkpoint

classify_module = importlib.import_module("galbench.inference.classify")


@pytest.fixture(scope="module")
def winner(finished_suite) -> Path:
    return finished_suite / "export" / "winner.onnx"


@pytest.fixture(scope="module")
def suite_catalog(finished_suite) -> Catalog:
    return read_catalog(json.loads((finished_suite / "suite.resolved.json").read_text())["catalog_path"])


@pytest.fixture
def png_folder(suite_catalog, tmp_path) -> tuple[Path, list[str]]:
    """Eight of the suite's galaxies as PNG files (the fourth one corrupt)."""
    folder = tmp_path / "pngs"
    folder.mkdir()
    names = []
    for row in range(8):
        name = f"g{row}.png"
        Image.fromarray(np.asarray(suite_catalog.images[row]).transpose(1, 2, 0)).save(folder / name)
        names.append(name)
    (folder / names[3]).write_bytes(b"<html>not an image</html>")
    return folder, names


def _astronomers_catalog(folder: Path, names: list[str]) -> Path:
    """A plain FITS table as a survey would write it: units, a TNULL, TDISP, TCOMM, primary header cards."""
    columns = [
        fits.Column(name="objid", format="K", array=np.arange(8) + 1000),
        fits.Column(name="image_path", format="12A", array=np.asarray(names)),
        fits.Column(name="petro_r", format="E", unit="mag", disp="F8.3", array=np.linspace(14, 17, 8)),
        fits.Column(name="z_flag", format="J", null=-99, array=np.array([0, 1, -99, 2, 0, -99, 1, 1])),
        fits.Column(name="size", format="D", unit="arcsec", array=np.linspace(2, 9, 8)),
    ]
    table = fits.BinTableHDU.from_columns(columns, name="GALAXIES")
    table.header["TCOMM3"] = "r-band Petrosian magnitude"
    table.header["TCOMM4"] = "redshift quality, null where unmeasured"
    table.header["SURVEY"] = "test survey"
    primary = fits.PrimaryHDU()
    primary.header["ORIGIN"] = "NOAO"
    primary.header["TELESCOP"] = "SDSS 2.5m"
    primary.header.add_history("catalog assembled by hand")
    other = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.zeros(3))], name="OTHER")
    path = folder / "survey.fits"
    fits.HDUList([primary, table, other]).writeto(path)
    return path


def test_fits_catalog_keeps_units_nulls_descriptions_and_header_cards(cli, winner, png_folder, tmp_path):
    folder, names = png_folder
    source = _astronomers_catalog(folder, names)
    out = tmp_path / "classified.fits"
    code, _, err = cli("classify", source, "--model", winner, "--out", out, "--skip-bad")
    assert code == 0, err
    table = Table.read(out, hdu="CATALOG")
    assert str(table["petro_r"].unit) == "mag" and str(table["size"].unit) == "arcsec"
    assert table["petro_r"].format == "{:8.3f}" and table["petro_r"].description == "r-band Petrosian magnitude"
    assert list(table["z_flag"].mask) == [False, False, True, False, False, True, False, False]
    assert list(table["pred_label"].mask) == [False, False, False, True, False, False, False, False]
    assert table["prob_spiral"].unit is None and table["prob_spiral"].description.startswith("probability of spiral")
    header = fits.getheader(out, "CATALOG")
    index = {header[f"TTYPE{k}"]: k for k in range(1, header["TFIELDS"] + 1)}
    assert header[f"TUNIT{index['petro_r']}"] == "mag" and header[f"TDISP{index['petro_r']}"] == "F8.3"
    assert header[f"TNULL{index['z_flag']}"] == -99 and header[f"TNULL{index['pred_label']}"] == -1
    assert header[f"TCOMM{index['petro_r']}"] == "r-band Petrosian magnitude"
    assert header[f"TCOMM{index['prob_spiral']}"].startswith("probability of spiral")
    assert f"TUNIT{index['prob_spiral']}" not in header
    assert header["SURVEY"] == "test survey" and header["ORIGIN"] == "galbench"
    assert header["CREATOR"].startswith("galbench ") and len(header["DATE"]) == 19
    meta = read_metadata(winner)
    assert header["MODEL"] == f"variant {meta['variant']} seed {meta['seed']} run {meta['run']}"
    assert header["CLASSES"] == "elliptical,spiral,edge-on" and len(header["MODELSHA"]) == 64
    assert any("galbench classify survey.fits" in line for line in header["HISTORY"])
    primary = fits.getheader(out, 0)
    assert primary["ORIGIN"] == "NOAO" and primary["TELESCOP"] == "SDSS 2.5m"  # kept, never replaced
    assert "catalog assembled by hand" in str(primary["HISTORY"]) and primary["CREATOR"].startswith("galbench")
    # the raw -99 stays a null marker for a reader that knows nothing of astropy
    raw = fits.getdata(out, "CATALOG")
    assert raw["z_flag"][2] == -99 and raw["pred_label"][3] == -1


def test_csv_votable_and_plain_tables_classify_alike(cli, winner, png_folder, tmp_path):
    folder, names = png_folder
    rows = [0, 1, 2, 4, 5, 6]
    plain = Table({"image_path": [names[k] for k in rows], "mag": np.arange(6.0)})
    plain.write(folder / "paths.csv", format="ascii.csv")
    plain.write(folder / "paths.xml", format="votable")
    plain.write(folder / "paths.fits")  # first binary table, no CATALOG name, no CLASSES, no objid
    predictions = []
    for name, out_name in (("paths.csv", "a.csv"), ("paths.xml", "b.ecsv"), ("paths.fits", "c.xml")):
        out = tmp_path / out_name
        code, _, err = cli("classify", folder / name, "--model", winner, "--out", out)
        assert code == 0, err
        result = Table.read(out, format={".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".xml": "votable"}[out.suffix])
        assert list(result["mag"]) == list(range(6)) and len(result) == 6
        predictions.append(np.asarray(result["prob_elliptical"], dtype=np.float64))
    for other in predictions[1:]:
        np.testing.assert_allclose(other, predictions[0], atol=1e-6)
    assert Table.read(tmp_path / "b.ecsv").meta["ORIGIN"] == "galbench"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        code, _, err = cli("classify", folder / "paths.csv", "--model", winner, "--out", tmp_path / "d.parquet")
        assert code == 2 and "Parquet tables need pyarrow" in err and len(err.strip().splitlines()) == 1
    else:
        code, _, err = cli("classify", folder / "paths.csv", "--model", winner, "--out", tmp_path / "d.parquet")
        assert code == 0, err
        assert len(Table.read(tmp_path / "d.parquet")) == 6


def test_input_tables_are_read_into_memory_and_a_cut_table_is_one_line(cli, winner, png_folder, tmp_path):
    """Columns left as views of the input's memory map would crash the process (SIGBUS) if the input were
    rewritten during classification; a file cut inside its table is one error line, not a traceback."""
    import mmap

    from galbench.inference.inputs import read_input

    folder, names = png_folder
    path = folder / "paths.fits"
    Table({"image_path": names, "flag": np.arange(8, dtype=np.uint8), "mag": np.arange(8.0)}).write(path)

    def mapped(array):
        while array is not None and not isinstance(array, mmap.mmap):
            array = getattr(array, "base", None)
        return array is not None

    table = read_input(path).table
    assert [name for name in table.colnames if mapped(np.asarray(table[name]))] == []
    with fits.open(path) as hdul:
        data_start = hdul[1].fileinfo()["datLoc"]
    cut = tmp_path / "cut.fits"
    cut.write_bytes(path.read_bytes()[:data_start + 40])
    code, _, err = cli("classify", cut, "--model", winner, "--out", tmp_path / "o.fits")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "table cannot be read" in err, err
    assert not (tmp_path / "o.fits").exists()


def test_time_and_sky_coordinate_columns_of_an_ecsv_input_are_kept(cli, winner, png_folder, tmp_path):
    from astropy.coordinates import SkyCoord
    from astropy.time import Time

    folder, names = png_folder
    rows = [0, 1, 2, 4]
    table = Table({"image_path": [names[k] for k in rows]})
    table["observed"] = Time(["2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01"])
    table["position"] = SkyCoord(ra=[1.0, 2.0, 3.0, 4.0], dec=[-1.0, 0.0, 1.0, 2.0], unit="deg")
    table.write(folder / "mixins.ecsv")
    code, _, err = cli("classify", folder / "mixins.ecsv", "--model", winner, "--out", tmp_path / "out.fits")
    assert code == 0, err
    back = Table.read(tmp_path / "out.fits", hdu="CATALOG", astropy_native=True)
    assert back["observed"][2].isot.startswith("2020-03-01") and back["position"][3].dec.deg == 2.0
    assert len(back) == 4 and "pred_class" in back.colnames
    code, _, err = cli("classify", folder / "mixins.ecsv", "--model", winner, "--out", tmp_path / "out.xml")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "VOTable cannot hold" in err, err
    assert not (tmp_path / "out.xml").exists()


def test_embeddings_match_the_torch_models_penultimate_layer(cli, winner, suite_catalog, tmp_path):
    catalog_file = tmp_path / "few.fits"
    write_catalog(catalog_file, Catalog(suite_catalog.table[:20], suite_catalog.classes,
                                        np.asarray(suite_catalog.images[:20])))
    out = tmp_path / "emb.fits"
    code, _, err = cli("classify", catalog_file, "--model", winner, "--out", out, "--embeddings")
    assert code == 0, err
    written = Table.read(out, hdu="CATALOG")["embedding"]
    model = deployed_from_checkpoint(load_checkpoint(winner.with_suffix(".pt")))
    with torch.no_grad():
        inputs = model.normalizer(torch.from_numpy(np.asarray(suite_catalog.images[:20])))
        expected = model.model.forward_head(model.model.forward_features(inputs), pre_logits=True).numpy()
    assert written.shape == (20, model.model.num_features) and written.dtype.kind == "f" and written.itemsize == 4
    np.testing.assert_allclose(written, expected, atol=1e-4)
    code, _, err = cli("classify", catalog_file, "--model", winner, "--out", tmp_path / "emb.csv", "--embeddings")
    assert code == 2 and "CSV cannot hold the embedding vectors" in err and not (tmp_path / "emb.csv").exists()


def test_fits_science_images_with_nan_pixels_are_filled_and_counted(cli, winner, tmp_path):
    rng = np.random.default_rng(0)
    good = rng.normal(size=(3, 64, 64)).astype(np.float32)
    holes = good.copy()
    holes[1, 10:12, 10:13] = np.nan
    holes[0, 40, 40] = np.inf
    empty = good.copy()
    empty[2] = np.nan
    for name, data in (("good.fits", good), ("holes.fits", holes), ("empty.fits", empty)):
        fits.PrimaryHDU(data).writeto(tmp_path / name)
    table = Table({"objid": np.array([7, 8, 9]), "image_path": ["good.fits", "holes.fits", "empty.fits"]})
    table.write(tmp_path / "float.fits")
    code, _, err = cli("classify", tmp_path / "float.fits", "--model", winner, "--out", tmp_path / "o.fits")
    assert code == 2 and "row 2 (objid 9)" in err and "no finite pixel" in err
    code, _, err = cli("classify", tmp_path / "float.fits", "--model", winner, "--out", tmp_path / "o.fits",
                       "--skip-bad")
    assert code == 0, err
    result = Table.read(tmp_path / "o.fits", hdu="CATALOG")
    assert list(result["filled_pixels"]) == [0, 7, 0] and list(result["bad_image"]) == [False, False, True]
    assert fits.getheader(tmp_path / "o.fits", "CATALOG")["NANFILLD"] == 7
    assert not result["pred_label"].mask[1]  # the galaxy with holes is classified, not rejected


def test_stretches_follow_astropy_and_travel_in_the_metadata(finished_suite, suite_catalog, tmp_path):
    from astropy.visualization import PercentileInterval, make_lupton_rgb

    from galbench.data.stretch import fill_non_finite, parse_stretch, stretch_bands

    rng = np.random.default_rng(1)
    bands = rng.gamma(2.0, 1.0, size=(3, 16, 16))
    lupton = parse_stretch("lupton:q=10,stretch=2")
    assert lupton == {"kind": "lupton", "q": 10.0, "stretch": 2.0, "minimum": 0.0}
    np.testing.assert_array_equal(stretch_bands(bands, lupton),
                                  make_lupton_rgb(bands[0], bands[1], bands[2], minimum=0.0, stretch=2.0, Q=10.0))
    low, high = PercentileInterval(99.0).get_limits(bands)
    expected = (np.clip((bands - low) / (high - low), 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(stretch_bands(bands, parse_stretch("percentile:99")), expected)
    holes = bands.copy()
    holes[0, 0, 0] = np.nan
    filled, count = fill_non_finite(holes)
    assert count == 1 and filled[0, 0, 0] == pytest.approx(np.median(bands[0].ravel()[1:]))
    for bad in ("sinh", "lupton:q", "lupton:z=1", "percentile:150"):
        with pytest.raises(GalbenchError):
            parse_stretch(bad)
    out = tmp_path / "lupton.onnx"
    meta = export_onnx(finished_suite / "runs" / "scratch__seed0" / "best.pt", out,
                       np.asarray(suite_catalog.images[:8]), catalog=replace(suite_catalog, pixscale=0.396,
                                                                             stretch="lupton:q=10,stretch=2"))
    read = read_metadata(out)
    assert read["stretch"] == lupton and json.loads(meta["stretch"]) == lupton
    assert read["resampling"]["import_filter"] == "lanczos" and read["resampling"]["import_crop"] is None
    assert float(read["input_pixscale_arcsec"]) == pytest.approx(0.396)  # 64 px catalog, crop 1, 64 px input


def test_fetch_uses_the_models_pixel_scale(monkeypatch, finished_suite, suite_catalog, tmp_path):
    from galbench.data import sdss

    model = tmp_path / "scaled.onnx"
    export_onnx(finished_suite / "runs" / "scratch__seed0" / "best.pt", model, np.asarray(suite_catalog.images[:8]),
                catalog=replace(suite_catalog, pixscale=0.25))
    asked = []

    def fake_fetch(ra, dec, scale, spec, **kwargs):
        asked.append((np.asarray(scale), spec.width))
        raise GalbenchError("stop here")

    monkeypatch.setattr(sdss, "fetch_cutouts", fake_fetch)
    coordinates = tmp_path / "coords.csv"
    Table({"ra": [10.0, 11.0], "dec": [1.0, 2.0]}).write(coordinates, format="ascii.csv")
    for given, expected in ((None, 0.25), (0.4, 0.4)):
        with pytest.raises(GalbenchError, match="stop here"):
            classify(coordinates, model=model, fetch={"scale": given})
        assert np.allclose(asked[-1][0], expected) and asked[-1][1] == 64


def test_resume_refuses_an_input_replaced_by_another_of_the_same_length(monkeypatch, winner, suite_catalog,
                                                                        tmp_path):
    monkeypatch.setattr(classify_module, "CHUNK_ROWS", 50)
    source = tmp_path / "input.fits"
    write_catalog(source, Catalog(suite_catalog.table[:150], suite_catalog.classes,
                                  np.asarray(suite_catalog.images[:150])))
    out = tmp_path / "out.fits"

    def interrupt(n, seen=[]):  # noqa: B006 - a counter shared by the calls of one classification
        seen.append(n)
        if sum(seen) >= 100:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        classify(source, model=winner, out=out, batch_size=50, progress=interrupt)
    assert (Path(str(out) + ".partial") / "rows_000000000000.npz").exists()
    write_catalog(source, Catalog(suite_catalog.table[150:300], suite_catalog.classes,
                                  np.asarray(suite_catalog.images[150:300])))
    with pytest.raises(GalbenchError, match="cannot resume: the input file's content changed"):
        classify(source, model=winner, out=out, batch_size=50, resume=True)
    assert not out.exists()
    fresh = classify(source, model=winner, out=out, batch_size=50)  # without --resume: starts over
    direct = classify(source, model=winner)
    assert (np.asarray(fresh["pred_label"]) == np.asarray(direct["pred_label"])).all()


def test_a_model_with_corrupted_weights_is_refused(cli, winner, suite_catalog, tmp_path):
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(winner))
    largest = max(proto.graph.initializer, key=lambda w: len(w.raw_data))
    blob = winner.read_bytes()
    start = blob.index(largest.raw_data) + len(largest.raw_data) // 2 - 2048
    corrupted = tmp_path / "corrupted.onnx"
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    corrupted.write_bytes(blob[:start] + noise + blob[start + 4096:])
    ort.InferenceSession(str(corrupted), providers=["CPUExecutionProvider"])  # ONNX Runtime alone accepts it
    catalog_file = tmp_path / "few.fits"
    write_catalog(catalog_file, Catalog(suite_catalog.table[:10], suite_catalog.classes,
                                        np.asarray(suite_catalog.images[:10])))
    code, _, err = cli("classify", catalog_file, "--model", corrupted, "--out", tmp_path / "o.fits")
    assert code == 2 and "do not match its weights_sha256" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.fits").exists()


def _many_kinds_of_column(rows: int) -> Table:
    from astropy import units as u
    from astropy.table import MaskedColumn

    rng = np.random.default_rng(3)
    table = Table()
    table["objid"] = np.arange(rows, dtype=np.int64) + 10**12
    table["ra"] = MaskedColumn(rng.uniform(0, 360, rows), unit="deg", mask=rng.random(rows) < 0.2,
                               description="right ascension")
    table["ra"].format = "{:10.5f}"
    table["flag"] = MaskedColumn(rng.integers(-5, 5, rows).astype(np.int32), mask=rng.random(rows) < 0.3,
                                 fill_value=-99)
    table["short"] = rng.integers(-300, 300, rows).astype(np.int16)
    table["byte"] = rng.integers(0, 255, rows).astype(np.uint8)
    table["mag"] = rng.normal(17, 1, rows).astype(np.float32)
    table["ok"] = rng.random(rows) < 0.5
    table["name"] = np.asarray([f"galaxy-{i}" if i % 7 else "" for i in range(rows)])  # padded, and empty
    # blanks astropy's writer turns to NULs where they end a value (never the first character)
    table["note"] = np.asarray(["NGC 1 ", "   ", " lead", "a  b", "", "end  ", "x \x00y", "z"])[np.arange(rows) % 8]
    table["code"] = np.asarray([b"AB ", b" ", b"C"])[np.arange(rows) % 3]
    table["flux"] = rng.uniform(0.1, 2.0, rows) * u.mJy  # a mixin column (Quantity)
    table["vector"] = rng.normal(0, 1, (rows, 5)).astype(np.float32)
    table["vector"].description = "a fixed-width float32 array column"
    table.meta["SURVEY"] = "test"
    return table


def test_catalogs_are_written_exactly_as_astropy_writes_them(monkeypatch, tmp_path):
    """galbench writes the CATALOG HDU's rows itself (one vectorised pass per column); the file is the same,
    byte for byte, as astropy's own writer makes it, or astropy writes it."""
    output_module = importlib.import_module("galbench.inference.output")
    monkeypatch.setattr(output_module, "provenance",
                        lambda: {"DATE": "2026-01-01T00:00:00", "ORIGIN": "galbench", "CREATOR": "galbench test"})
    primary = fits.Header()
    primary["TELESCOP"] = "SDSS 2.5m"
    cards, history = {"MODEL": "variant scratch seed 0", "CLASSES": "a,b"}, ["galbench classify test.fits"]
    table = _many_kinds_of_column(1000)
    header = output_module.table_hdu(table, cards, history, rows=False).header
    assert output_module.fits_records(table, header) is not None  # every kind here is written by galbench
    output_module.write_output(tmp_path / "galbench.fits", table, primary, cards, history)
    monkeypatch.setattr(output_module, "fits_records", lambda *args: None)
    output_module.write_output(tmp_path / "astropy.fits", table, primary, cards, history)
    assert (tmp_path / "galbench.fits").read_bytes() == (tmp_path / "astropy.fits").read_bytes()
    back = Table.read(tmp_path / "galbench.fits", hdu="CATALOG")
    assert list(back["flag"].mask) == list(table["flag"].mask) and back["ra"].description == "right ascension"
    assert list(np.ma.filled(back["name"], "")) == list(table["name"]) and back["flux"].unit == "mJy"


def test_tables_with_time_and_sky_coordinate_columns_are_written(monkeypatch, tmp_path):
    """Mixin columns, as an ECSV or FITS input can carry them: written and read back; where galbench writes
    the rows itself (sky coordinates), the same bytes as astropy."""
    from astropy.coordinates import SkyCoord
    from astropy.time import Time

    output_module = importlib.import_module("galbench.inference.output")
    monkeypatch.setattr(output_module, "provenance",
                        lambda: {"DATE": "2026-01-01T00:00:00", "ORIGIN": "galbench", "CREATOR": "galbench test"})
    table = Table({"objid": np.arange(4), "mag": np.linspace(15, 18, 4)})
    table["position"] = SkyCoord(ra=[10.0, 20.0, 30.0, 40.0], dec=[-5.0, 0.0, 5.0, 10.0], unit="deg")
    table["mag"].description = "r magnitude"
    output_module.write_output(tmp_path / "galbench.fits", table, None, {"MODEL": "m"}, ["h"])
    monkeypatch.setattr(output_module, "fits_records", lambda *args: None)
    output_module.write_output(tmp_path / "astropy.fits", table, None, {"MODEL": "m"}, ["h"])
    assert (tmp_path / "galbench.fits").read_bytes() == (tmp_path / "astropy.fits").read_bytes()
    table["observed"] = Time(["2020-01-01", "2020-06-01", "2021-01-01", "2021-06-01"])
    output_module.write_output(tmp_path / "time.fits", table, None, {"MODEL": "m"}, ["h"])
    back = Table.read(tmp_path / "time.fits", hdu="CATALOG", astropy_native=True)
    assert back["observed"].isot[2].startswith("2021-01-01") and back["position"].ra.deg[1] == 20.0
    assert back["mag"].description == "r magnitude"
    with fits.open(tmp_path / "time.fits") as hdul:
        header = hdul["CATALOG"].header
        assert header[f"TCOMM{[header[f'TTYPE{k}'] for k in range(1, 6)].index('mag') + 1}"] == "r magnitude"


@pytest.mark.parametrize("kind", ["int8", "uint16", "masked text", "non-ASCII text"])
def test_columns_that_need_astropys_conversion_are_left_to_it(kind):
    from astropy.table import MaskedColumn

    output_module = importlib.import_module("galbench.inference.output")
    table = Table({"x": np.arange(4.0)})
    table["y"] = {"int8": np.arange(4, dtype=np.int8), "uint16": np.arange(4, dtype=np.uint16) + 40000,
                  "masked text": MaskedColumn(["a", "b", "c", "d"], mask=[0, 1, 0, 0]),
                  "non-ASCII text": np.asarray(["a", "b", "c", "é"])}[kind]
    header = output_module.table_hdu(table, {}, [], rows=False).header
    assert output_module.fits_records(table, header) is None


def test_copy_images_puts_the_input_cube_beside_the_classified_table(winner, finished_suite, tmp_path):
    resolved = json.loads((finished_suite / "suite.resolved.json").read_text())
    out = tmp_path / "with-images.fits"
    table = classify(resolved["catalog_path"], model=winner, out=out, copy_images=True)
    with fits.open(out) as written, fits.open(resolved["catalog_path"]) as given:
        assert [hdu.name for hdu in written] == ["PRIMARY", "CATALOG", "IMAGES"]
        np.testing.assert_array_equal(written["IMAGES"].data, given["IMAGES"].data)
    back = Table.read(out, hdu="CATALOG")
    assert len(back) == len(table) and list(back["pred_label"]) == list(table["pred_label"])
