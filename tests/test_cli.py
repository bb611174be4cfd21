"""Command-line conventions: usage and exit codes, -V, -q, --json, stdout for results and stderr for the rest,
and what a run records about the code and packages that made it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import galbench
from galbench.cli import main
from tests.conftest import write_suite


@pytest.mark.parametrize("argv", [[], ["data"], ["pretrain"]])
def test_a_command_group_without_its_command_prints_usage_and_exits_2(cli, argv):
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert err.startswith("usage: galbench")


def test_version(capsys):
    for flag in ("-V", "--version"):
        with pytest.raises(SystemExit) as exit_info:
            main([flag])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.strip() == f"galbench {galbench.__version__}"


def test_quiet_before_or_after_the_command_leaves_stderr_empty(cli, tmp_path):
    for argv in (["-q", "data", "synth", tmp_path / "a.fits"], ["data", "synth", tmp_path / "b.fits", "--quiet"]):
        code, out, err = cli(*argv, "--n", 12, "--workers", 1)
        assert code == 0 and out == "" and err == ""
    code, _, err = cli("-q", "data", "info", tmp_path / "missing.fits")  # errors still show
    assert code == 2 and err.startswith("error:")


def test_wrote_goes_to_stderr_and_results_to_stdout(cli, tmp_path):
    code, out, err = cli("data", "synth", tmp_path / "sim.fits", "--n", 12, "--workers", 1)
    assert code == 0 and out == "" and f"wrote 12 galaxies to {tmp_path / 'sim.fits'}" in err
    code, out, err = cli("data", "info", tmp_path / "sim.fits")
    assert code == 0 and "elliptical" in out and err == ""


def test_data_info_json(cli, small_catalog_file):
    code, out, err = cli("data", "info", small_catalog_file, "--json")
    assert code == 0 and err == ""
    info = json.loads(out)
    assert info["rows"] == 12 and info["classes"] == ["a", "b", "c"]
    assert info["class_counts"] == {"a": 4, "b": 4, "c": 4}
    assert info["images"]["shape"] == [12, 3, 32, 32] and info["images"]["bands"] == ["i", "r", "g"]
    assert -30 <= info["dec_range_deg"][0] <= info["dec_range_deg"][1] <= 60
    assert "objid" in info["columns"] and info["file"] == str(small_catalog_file)


def test_no_python_reprs_in_messages(cli, small_catalog_file, tmp_path):
    from astropy.io import fits

    # a label outside the classes names the classes as text, not as a Python list
    with fits.open(small_catalog_file) as hdul:
        hdul["CATALOG"].data["label"][0] = 9
        hdul.writeto(tmp_path / "bad.fits")
    code, _, err = cli("data", "info", tmp_path / "bad.fits")
    assert code == 2 and "classes a, b, c" in err and "['a'" not in err


def test_packaged_quickstart_loads_by_name_from_any_folder(tmp_path, monkeypatch):
    from galbench.experiment.suite import load_suite, packaged_suites

    monkeypatch.chdir(tmp_path)
    assert "quickstart" in packaged_suites()
    suite, base = load_suite("quickstart")
    assert suite.suite.name == "quickstart" and base == tmp_path
    assert {v.name for v in suite.variant} == {"scratch", "fractal", "sim-pretrained"}
    # the repository's suites/quickstart.toml is the same file
    repo = Path(__file__).resolve().parents[1]
    assert (repo / "suites" / "quickstart.toml").read_bytes() == (repo / "galbench" / "suites" /
                                                                  "quickstart.toml").read_bytes()


def test_pyproject_ships_the_suites_as_package_data():
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    assert "suites/*.toml" in config["tool"]["setuptools"]["package-data"]["galbench"]


def test_checkpoint_every_does_not_move_the_run_directory(tmp_path):
    from galbench.experiment.suite import load_suite

    suite = write_suite(tmp_path)
    plain, _ = load_suite(suite)
    sparse, _ = load_suite(suite, ["train.checkpoint_every='600s'", "variant.scratch.train.checkpoint_every=3"])
    assert sparse.train.checkpoint_every == "600s" and plain.identity() == sparse.identity()
    for bad in ("0", "'10m'", "'-5s'"):
        with pytest.raises(galbench.GalbenchError, match="checkpoint_every"):
            load_suite(suite, [f"train.checkpoint_every={bad}"])


def test_environment_records_code_and_package_versions(finished_suite):
    import numpy
    import torch

    environment = json.loads((finished_suite / "environment.json").read_text())
    packages = environment["packages"]
    assert packages["torch"] == torch.__version__.split("+")[0] and packages["numpy"] == numpy.__version__
    assert {"onnx", "onnxruntime", "torchvision"} <= set(packages)
    code = environment["code"]
    assert re.fullmatch(r"[0-9a-f]{64}", code["source_sha256"])
    repo = Path(galbench.__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert code["git_commit"] == head.stdout.strip() and isinstance(code["git_dirty"], bool)
