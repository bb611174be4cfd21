"""Bad input: one clear line naming the file and what is wrong, exit code 2, nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galbench.data.catalog import write_catalog
from tests.conftest import make_catalog


def _write_raw(path, table_hdu=True, images=None, classes="a,b,c", table=None):
    hdus = [fits.PrimaryHDU()]
    if table_hdu:
        tab = table if table is not None else make_catalog().table
        hdu = fits.BinTableHDU(tab, name="CATALOG")
        if classes is not None:
            hdu.header["CLASSES"] = classes
        hdus.append(hdu)
    if images is not None:
        hdus.append(fits.ImageHDU(images, name="IMAGES"))
    fits.HDUList(hdus).writeto(path)
    return path


def _assert_one_line_error(result, *fragments):
    code, out, err = result
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


GOOD_IMAGES = np.zeros((12, 3, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("missing_catalog", ["no CATALOG HDU"]),
        ("missing_images", ["no IMAGES HDU"]),
        ("rows_mismatch", ["[IMAGES]", "11 images but 12 catalog rows"]),
        ("wrong_dtype", ["[IMAGES]", "BITPIX=16"]),
        ("wrong_rank", ["[IMAGES]", "expected (N, 3, H, W)"]),
        ("nan_coordinates", ["[CATALOG]", "'ra' has 1 NaN"]),
        ("label_outside_classes", ["[CATALOG]", "label 7 at row 0 is outside the 3 classes"]),
        ("no_classes_header", ["[CATALOG]", "no CLASSES"]),
        ("missing_objid", ["missing column 'objid'"]),
        ("truncated", ["[IMAGES]", "truncated"]),
        ("cut_in_a_header", ["damaged after HDU 1", "truncated or corrupted"]),
        ("not_fits", ["not a readable FITS file"]),
    ],
)
def test_malformed_catalogs_give_one_line_and_exit_2(cli, tmp_path, case, fragments):
    path = tmp_path / f"{case}.fits"
    table = make_catalog().table
    if case == "missing_catalog":
        _write_raw(path, table_hdu=False, images=GOOD_IMAGES)
    elif case == "missing_images":
        _write_raw(path)
    elif case == "rows_mismatch":
        _write_raw(path, images=GOOD_IMAGES[:11])
    elif case == "wrong_dtype":
        _write_raw(path, images=GOOD_IMAGES.astype(np.int16))
    elif case == "wrong_rank":
        _write_raw(path, images=np.zeros((12, 8, 8), dtype=np.uint8))
    elif case == "nan_coordinates":
        table["ra"][3] = np.nan
        _write_raw(path, images=GOOD_IMAGES, table=table)
    elif case == "label_outside_classes":
        table["label"][0] = 7
        _write_raw(path, images=GOOD_IMAGES, table=table)
    elif case == "no_classes_header":
        _write_raw(path, images=GOOD_IMAGES, classes=None)
    elif case == "missing_objid":
        table.remove_column("objid")
        _write_raw(path, images=GOOD_IMAGES, table=table)
    elif case == "truncated":
        write_catalog(path, make_catalog(n=40, size=32))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 20000])
    elif case == "cut_in_a_header":  # astropy stops at the cut, and would report no IMAGES HDU
        write_catalog(path, make_catalog(n=40, size=32))
        with fits.open(path) as hdul:
            images_header = hdul["IMAGES"].fileinfo()["hdrLoc"]
        path.write_bytes(path.read_bytes()[:images_header + 1000])
    elif case == "not_fits":
        path.write_text("this is not FITS\n")
    _assert_one_line_error(cli("data", "montage", path, tmp_path / "out.png"), str(path), *fragments)
    assert not (tmp_path / "out.png").exists()


def test_writing_an_invalid_catalog_leaves_no_file(tmp_path):
    catalog = make_catalog()
    catalog.table["label"][2] = 9
    target = tmp_path / "never.fits"
    with pytest.raises(Exception, match="outside"):
        write_catalog(target, catalog)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "keep.fits"
    write_catalog(target, make_catalog())
    before = target.read_bytes()

    def explode(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", explode)
    with pytest.raises(OSError):
        write_catalog(target, make_catalog(seed=5))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.fits"]


def test_bad_synth_arguments_exit_2(cli, tmp_path):
    _assert_one_line_error(cli("data", "synth", tmp_path / "x.fits", "--size", 8), "size must be between")
    _assert_one_line_error(cli("data", "synth", tmp_path / "x.fits", "--classes", "spiral:-1"), "positive")
    assert not (tmp_path / "x.fits").exists()


def test_table_with_bad_label_dtype_is_rejected(cli, tmp_path):
    table = Table({"objid": np.arange(12), "label": np.linspace(0, 1, 12)})
    path = _write_raw(tmp_path / "float_labels.fits", images=GOOD_IMAGES, table=table)
    _assert_one_line_error(cli("data", "info", path), "'label' has dtype float64")


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    target = tmp_path / "perm.fits"
    write_catalog(target, make_catalog())
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


# --- suite files, catalogs and runs: one line, exit 2, no folder or file left behind -------------------------


def test_a_suite_file_that_is_not_utf8_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "latin1.toml"
    suite.write_bytes('[suite]\nname = "caf\xe9"\n'.encode("latin-1"))
    _assert_one_line_error(cli("run", suite), str(suite), "not UTF-8 text (byte 0xe9", "save the suite file as UTF-8")
    assert not (tmp_path / "reports").exists()


def test_a_folder_given_as_the_suite_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _assert_one_line_error(cli("run", tmp_path), str(tmp_path), "is a folder, not a suite file")
    assert not (tmp_path / "reports").exists()


def test_an_unknown_model_is_caught_before_a_run_directory_exists(cli, tmp_path, monkeypatch):
    from tests.conftest import write_suite

    monkeypatch.chdir(tmp_path)
    suite = write_suite(tmp_path)
    suite.write_text(suite.read_text().replace('model = "alexnet-tiny"', 'model = "alexnet-tinny"'))
    _assert_one_line_error(cli("run", suite), "'variant.scratch.model': unknown model 'alexnet-tinny'",
                           "did you mean alexnet-tiny", "timm:NAME")
    assert not (tmp_path / "reports").exists()
    # timm names are checked against timm's own list, still before anything is written
    from galbench.experiment.suite import load_suite

    suite.write_text(suite.read_text().replace('model = "alexnet-tinny"', 'model = "timm:resnet1"'))
    _assert_one_line_error(cli("run", suite), "timm has no model 'resnet1'", "timm:resnet18")
    assert not (tmp_path / "reports").exists()
    suite.write_text(suite.read_text().replace('model = "timm:resnet1"', 'model = "timm:resnet18"'))
    assert load_suite(suite)[0].variant[0].model == "timm:resnet18"


def test_a_failed_run_leaves_no_empty_folders(cli, tmp_path, monkeypatch):
    from tests.conftest import write_suite

    monkeypatch.chdir(tmp_path)
    suite = write_suite(tmp_path, data='catalog = "missing.fits"\ncreate_with = "galbench data synth missing.fits"')
    _assert_one_line_error(cli("run", suite), "catalog file not found; create it with: galbench data synth")
    assert not (tmp_path / "reports").exists()
    out = tmp_path / "deep" / "er" / "run"
    _assert_one_line_error(cli("run", suite, "--out", out), "catalog file not found")
    assert not (tmp_path / "deep").exists()


@pytest.mark.parametrize("command", ["info", "montage"])
def test_a_catalog_with_no_rows_is_one_line(cli, tmp_path, command):
    path = _write_raw(tmp_path / "empty.fits", images=np.zeros((0, 3, 8, 8), np.uint8),
                      table=make_catalog().table[:0])
    args = ("data", command, path) + ((tmp_path / "out.png",) if command == "montage" else ())
    _assert_one_line_error(cli(*args), str(path), "[CATALOG]", "the catalog has no rows")
    assert not (tmp_path / "out.png").exists()


def test_declinations_outside_the_sky_are_refused(cli, tmp_path):
    table = make_catalog().table
    table["dec"][4] = 123.5
    path = _write_raw(tmp_path / "dec.fits", images=GOOD_IMAGES, table=table)
    _assert_one_line_error(cli("data", "info", path), "[CATALOG]", "'dec' has 1 values outside [-90, 90]",
                           "123.5 at row 4, objid 104")


def test_a_gzipped_catalog_says_how_to_decompress_it(cli, small_catalog_file, tmp_path):
    import gzip

    packed = tmp_path / "packed" / "small.fits.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(small_catalog_file.read_bytes()))
    _assert_one_line_error(cli("data", "info", packed), str(packed), "gzip-compressed", f"gunzip -k {packed}")
    # and what it says works
    import subprocess

    subprocess.run(["gunzip", "-k", str(packed)], check=True)
    assert cli("data", "info", packed.with_suffix(""))[0] == 0


def test_classify_interrupted_says_resume(cli, small_catalog_file, tmp_path, monkeypatch):
    import galbench.inference.classify as classify_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(classify_module, "classify", interrupted)
    code, _, err = cli("classify", small_catalog_file, "--model", tmp_path / "model.onnx", "--out", tmp_path / "out.fits")
    assert code == 130 and "interrupted" in err and "with --resume" in err


@pytest.mark.parametrize(("argv", "fragment"), [
    (["data", "montage", "{catalog}", "{tmp}/m.png", "--per-class", "0"], "--per-class: must be at least 1, got 0"),
    (["pretrain", "fractal", "{tmp}/f.pt", "--epochs", "0"], "--epochs: must be at least 1, got 0"),
    (["data", "synth", "{tmp}/s.fits", "--workers", "two"], "--workers: 'two' is not a whole number"),
    (["run", "quickstart", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_line(capsys, small_catalog_file, tmp_path, argv, fragment):
    from galbench.cli import main

    argv = [part.format(catalog=small_catalog_file, tmp=tmp_path) for part in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("error: galbench"), lines
    assert list(tmp_path.iterdir()) == [small_catalog_file]
