"""Suite files are checked before any work: typos with the nearest key, wrong types, impossible values."""

from __future__ import annotations

import pytest

from galbench.errors import GalbenchError
from galbench.experiment.suite import apply_overrides, load_suite, parse_override
from tests.conftest import write_suite


def _error(path, *overrides) -> str:
    with pytest.raises(GalbenchError) as info:
        load_suite(path, list(overrides))
    return str(info.value)


def test_valid_suite_resolves_defaults_and_overrides(tmp_path):
    suite, base = load_suite(write_suite(tmp_path), ["train.epochs=5", "variant.scratch.train.lr=0.5"])
    assert suite.train.epochs == 5 and suite.suite.seeds == [0, 1]
    assert suite.train_for(suite.variant[0]).lr == 0.5 and suite.train.lr == 0.002
    assert suite.baseline == "scratch" and base == tmp_path.resolve()


@pytest.mark.parametrize(("overrides", "expected"), [
    (["train.epcohs=3"], "unknown key 'train.epcohs' (did you mean 'epochs'?)"),
    (["data.augmnt.flips=false"], "unknown key 'data.augmnt' (did you mean 'augment'?)"),
    (["variant.scratch.train.bach_size=3"], "unknown key 'variant.scratch.train.bach_size' (did you mean 'batch_size'?)"),
    (["train.lr='fast'"], "'train.lr': Input should be a valid number"),
    (["train.lr=-1"], "'train.lr': Input should be greater than 0"),
    (["train.device='gpu'"], "'train.device'"),
    (["data.split.train=0.9"], "train + val + test must be 1"),
    (["suite.seeds=0"], "seeds must be at least 1"),
    (["suite.thresholds=[1.5]"], "'suite.thresholds.0'"),
    (["variant.scratch.init='imaginet'"], "unknown init 'imaginet'"),
    (["variant.scratch.init='pretrained:nothere'"], "no [[pretrained]] entry named 'nothere'"),
    (["suite.baseline='nope'"], "baseline 'nope' is not a variant name"),
    (["data.image_size=32"], "'data.image_size': Input should be greater than or equal to 64"),
])
def test_bad_values_name_the_key(tmp_path, overrides, expected):
    message = _error(write_suite(tmp_path), *overrides)
    assert expected in message and str(tmp_path) in message


def test_malformed_toml_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[suite\nname = 'x'\n")
    assert "malformed TOML" in _error(path) and "line 1" in _error(path)


def test_both_or_neither_data_source_is_rejected(tmp_path):
    both = write_suite(tmp_path, data='catalog = "x.fits"\nsynth = { n = 20 }')
    assert "exactly one of data.catalog" in _error(both)


def test_cli_run_rejects_before_work_with_exit_2(cli, tmp_path):
    path = write_suite(tmp_path)
    code, _, err = cli("run", path, "--set", "train.epcohs=3", "--out", tmp_path / "out")
    assert code == 2 and "did you mean 'epochs'" in err
    assert not (tmp_path / "out").exists()


def test_missing_catalog_says_how_to_create_it(cli, tmp_path):
    path = write_suite(tmp_path, data='catalog = "nair.fits"\ncreate_with = "galbench data sdss nair.fits"')
    code, _, err = cli("run", path, "--out", tmp_path / "out")
    assert code == 2 and "catalog file not found; create it with: galbench data sdss nair.fits" in err


def test_override_parsing():
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("train.optimizer=sgd") == (["train", "optimizer"], "sgd")
    assert parse_override("suite.seeds=[1, 2]") == (["suite", "seeds"], [1, 2])
    with pytest.raises(GalbenchError):
        apply_overrides({"variant": [{"name": "a"}]}, ["variant.b.lr=1"])


def test_shipped_suites_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "suites"
    for path in sorted(root.glob("*.toml")):
        suite, _ = load_suite(path)
        assert suite.variant
