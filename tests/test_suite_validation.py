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
    (["suite.threshold_metric='f1'"], "'suite.threshold_metric': Input should be 'accuracy' or 'balanced_accuracy'"),
    (["analysis.primray='test_accuracy'"], "unknown key 'analysis.primray' (did you mean 'primary'?)"),
    (["analysis.primary='speed'"], "analysis.primary 'speed': use test_accuracy, test_balanced_accuracy or "
                                   "epochs_to:<threshold>, samples_to:<threshold>, flops_to:<threshold>"),
    (["analysis.primary='flops_to:0.65'"], "the threshold must be one of suite.thresholds (0.4, 0.6, 0.99)"),
    (["analysis.primary='joules_to:0.6'"], "analysis.primary 'joules_to:0.6': use test_accuracy"),
    (["analysis.alpha=1.5"], "'analysis.alpha': Input should be less than 1"),
    (["analysis.equivalence=0"], "'analysis.equivalence': Input should be greater than 0"),
    (["train.steps=30"], "'train': evals_per_epoch needs an epochs budget; with steps give evals"),
    (["variant.scratch.train.steps=30"], "'variant.scratch.train': evals_per_epoch needs an epochs budget"),
    (["train.schedule='onecycle'", "train.warmup_epochs=1"], "onecycle warms up by itself"),
    (["train.schedule='exponential'"], "'train.schedule': Input should be 'constant', 'cosine', 'step' or 'onecycle'"),
    (["train.class_weights='inverse'"], "'train.class_weights': Input should be 'none' or 'balanced'"),
    (["train.sampler='oversample'"], "'train.sampler': Input should be 'shuffle' or 'balanced'"),
    (["suite.per_class=true"], "per_class = true needs suite.train_sizes"),
    (["suite.train_sizes=[10, 10]"], "train_sizes must be a non-empty list without repeats"),
    (["suite.train_sizes=[0]"], "'suite.train_sizes.0"),
    (["suite.train_sizes=['most']"], "'suite.train_sizes.0"),
])
def test_bad_values_name_the_key(tmp_path, overrides, expected):
    message = _error(write_suite(tmp_path), *overrides)
    assert expected in message and str(tmp_path) in message


def test_new_keys_resolve_with_their_defaults(tmp_path):
    suite, _ = load_suite(write_suite(tmp_path))
    assert suite.suite.threshold_metric == "accuracy" and suite.suite.train_sizes is None
    # primary None: not declared (the statistics use test_accuracy and the report says it was the default)
    assert suite.analysis.model_dump() == {"primary": None, "alpha": 0.05, "equivalence": None,
                                           "allow_unequal_budgets": False}
    assert suite.primary_endpoint() == {"kind": "accuracy", "metric": "test_accuracy"}
    assert suite.data.split.per_seed is False and suite.train.class_weights == "none"
    assert suite.train.sampler == "shuffle" and suite.replicates_for(suite.variant[0]) == 1
    sized, _ = load_suite(write_suite(tmp_path), ["suite.train_sizes=['all', 30, 10]", "suite.per_class=true",
                                                  "analysis.primary='device_seconds_to:0.6'"])
    assert sized.suite.train_sizes == [10, 30, "all"] and sized.suite.size_label(10) == "10-per-class"
    assert sized.primary_endpoint() == {"kind": "cost_to_threshold", "cost": "device_seconds", "threshold": 0.6}


@pytest.mark.parametrize(("added", "expected"), [
    ("steps = 30", "'train': give epochs or steps, not both"),
    ("evals = 3", "'train': give evals_per_epoch or evals, not both"),
])
def test_a_file_giving_two_budgets_or_two_grids_is_refused(tmp_path, added, expected):
    path = write_suite(tmp_path)
    path.write_text(path.read_text().replace("epochs = 2\n", f"epochs = 2\n{added}\n"))
    assert expected in _error(path)


def test_a_budget_on_the_command_line_replaces_the_files(tmp_path):
    suite, _ = load_suite(write_suite(tmp_path), ["train.steps=200", "train.evals=8"])
    assert suite.train.budget() == {"steps": 200, "evals": 8}
    assert suite.train.epochs is None and suite.train.evals_per_epoch is None
    longer, _ = load_suite(write_suite(tmp_path), ["variant.scratch.train.epochs=5"])
    assert longer.train_for(longer.variant[0]).budget() == {"epochs": 5, "evals_per_epoch": 2}


def test_arms_with_different_budgets_are_refused_unless_the_suite_allows_it(tmp_path):
    extra = '\n[[variant]]\nname = "longer"\nmodel = "alexnet-tiny"\ntrain = { epochs = 3 }\n'
    path = write_suite(tmp_path, extra=extra)
    assert ("variants 'scratch' (epochs = 2, evals_per_epoch = 2) and 'longer' (epochs = 3, evals_per_epoch = 2) "
            "have different budgets or evaluation grids") in _error(path)
    assert "analysis.allow_unequal_budgets = true" in _error(path, "variant.longer.train.epochs=2",
                                                             "variant.longer.train.evals=4")
    suite, _ = load_suite(path, ["analysis.allow_unequal_budgets=true"])
    assert [suite.train_for(v).budget()["epochs"] for v in suite.variant] == [2, 3]
    load_suite(path, ["variant.longer.train.epochs=2"])  # the same budget spelled out is accepted


def test_more_pretraining_replicates_than_seeds_are_refused(tmp_path):
    extra = ('\n[[variant]]\nname = "fractal"\nmodel = "alexnet-tiny"\ninit = "fractal"\n'
             'fractal = { replicates = 3 }\n')
    assert "variant 'fractal': 3 pretraining replicates for 2 seeds would leave some unused" in \
        _error(write_suite(tmp_path, extra=extra))
    suite, _ = load_suite(write_suite(tmp_path, extra=extra), ["suite.seeds=3"])
    assert suite.replicates_for(suite.variant[1]) == 3


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
