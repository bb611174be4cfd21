"""Self-supervised pretraining in suites: no validation or test image gets in, costs are shared, runs resume."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from galbench.data.catalog import read_catalog, write_catalog
from galbench.data.tensors import stratified_split
from galbench.errors import GalbenchError
from galbench.experiment.suite import load_suite
from tests.conftest import make_catalog, write_suite

lightly = pytest.importorskip("lightly", reason="self-supervised pretraining needs lightly (galbench[ssl])")

from galbench.experiment import ssl  # noqa: E402
from galbench.models.weights import load_checkpoint  # noqa: E402

SSL_SECTION = """
[[variant]]
name = "ssl"
model = "alexnet-tiny"
init = "pretrained:self"

[[pretrained]]
name = "self"
method = "{method}"
{source}
epochs = 1
batch_size = 16
probes = 1
hidden_dim = 32
projection_dim = 16
"""


def _catalog_with_planted_copies(path, n_labelled=60, n_unlabelled=12):
    """A catalog whose unlabelled rows include exact copies of validation and test images."""
    catalog = make_catalog(n=n_labelled + n_unlabelled, size=64, seed=3)
    labels = np.asarray(catalog.table["label"]).copy()
    labels[n_labelled:] = -1
    catalog.table["label"] = labels
    split = stratified_split(labels, (0.6, 0.2, 0.2), 0)
    planted = {n_labelled: split["test"][0], n_labelled + 1: split["val"][0], n_labelled + 2: split["test"][1]}
    for row, source in planted.items():
        catalog.images[row] = catalog.images[source]
    write_catalog(path, catalog)
    return split, planted


def _digest(image) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


class _Captured(Exception):
    pass


def _capture_pretraining_images(monkeypatch, suite_path):
    """Run the suite's SSL pretraining up to the point where its images are handed to the loop."""
    captured = {}

    def fake_pretrain(spec, images, probe, out, **kwargs):
        captured.update(spec=spec, images=images, probe=probe)
        raise _Captured

    monkeypatch.setattr(ssl, "pretrain_ssl", fake_pretrain)
    suite, base = load_suite(suite_path)
    with pytest.raises(_Captured):
        ssl.ensure_ssl_pretraining(suite.pretrained[0], "alexnet-tiny", suite, base, torch.device("cpu"))
    return captured


@pytest.mark.parametrize("source", ['catalog = "train"', 'catalog = "unlabelled"', 'catalog = "data.fits"',
                                    'catalog = "copies.fits"'])
def test_validation_and_test_images_never_enter_the_pretraining(source, tmp_path, monkeypatch):
    split, planted = _catalog_with_planted_copies(tmp_path / "data.fits")
    held_out_rows = np.concatenate([split["val"], split["test"]])
    suite_images = read_catalog(tmp_path / "data.fits").images
    held_out = {_digest(suite_images[row]) for row in held_out_rows}
    # another catalog: 20 unrelated images and copies of five held-out ones
    other = make_catalog(n=25, size=64, seed=9)
    other.images[20:] = suite_images[held_out_rows[:5]]
    write_catalog(tmp_path / "copies.fits", other)
    suite_path = write_suite(tmp_path, data='catalog = "data.fits"',
                             extra=SSL_SECTION.format(method="simclr", source=source))
    captured = _capture_pretraining_images(monkeypatch, suite_path)
    images = captured["images"]
    pretrained_on = {_digest(image) for image in images.source[images.rows]}
    assert not pretrained_on & held_out
    dropped = captured["spec"].source["held_out_copies_dropped"]
    if source == 'catalog = "train"':
        np.testing.assert_array_equal(images.rows, split["train"])
        assert dropped == 0
    elif source == 'catalog = "unlabelled"':  # every row outside val and test, unlabelled ones included
        assert set(images.rows) == set(range(72)) - set(held_out_rows) - set(planted)
        assert dropped == len(planted)
    elif source == 'catalog = "data.fits"':  # the suite's own file named as "another" catalog
        assert set(images.rows) == set(range(72)) - set(held_out_rows) - set(planted)
    else:
        np.testing.assert_array_equal(images.rows, np.arange(20))
        assert dropped == 5
    # the probes fit on the labelled training split and score on the validation split, never the test split
    np.testing.assert_array_equal(captured["probe"].fit.rows, split["train"])
    np.testing.assert_array_equal(captured["probe"].score.rows, split["val"])


def test_pretraining_rows_with_one_split_per_seed_keep_out_every_seeds_held_out_rows():
    labels = np.repeat([0, 1, 2, -1], [30, 20, 10, 15])
    splits = [stratified_split(labels, (0.6, 0.2, 0.2), seed) for seed in range(3)]
    held_out = set(np.concatenate([s[p] for s in splits for p in ("val", "test")]))
    train = ssl.pretraining_rows("train", labels.size, splits)
    unlabelled = ssl.pretraining_rows("unlabelled", labels.size, splits)
    assert train.size > 0 and not set(train) & held_out
    assert all(set(train) <= set(s["train"]) for s in splits)  # in every seed's training split
    assert not set(unlabelled) & held_out and set(np.flatnonzero(labels < 0)) <= set(unlabelled)
    assert set(unlabelled) == set(range(labels.size)) - held_out
    with pytest.raises(GalbenchError):
        ssl.pretraining_rows("test", labels.size, splits)


def test_a_suite_pretrains_once_shares_the_cost_and_reuses_the_cache(cli, tmp_path):
    suite = write_suite(tmp_path, seeds=2, epochs=1,
                        extra=SSL_SECTION.format(method="byol", source='catalog = "train"'))
    code, _, err = cli("run", suite, "--out", tmp_path / "a", "--no-report")
    assert code == 0, err
    from galbench.fileio import cache_dir

    (cached,) = cache_dir("pretrain").glob("ssl-byol-*.pt")
    assert cached.with_name(cached.stem + ".probe.png").exists()
    assert cached.with_name(cached.stem + ".events.jsonl").exists()
    stamp = cached.stat().st_mtime_ns
    assert cli("run", suite, "--out", tmp_path / "b", "--no-report")[0] == 0
    assert cached.stat().st_mtime_ns == stamp  # reused, not made again
    runs = json.loads((tmp_path / "a" / "results.json").read_text())["runs"]
    pretrained = [r for r in runs if r["variant"] == "ssl"]
    meta = load_checkpoint(cached)["meta"]
    assert all(r["pretrain_shared_by"] == 2 and r["pretrain_cost"] == meta["pretrain_cost"] for r in pretrained)
    # the probe curve travels with the runs, for the report's plot; each run names its pretraining
    assert all(r["pretrain_meta"]["probe_curve"] == meta["probe_curve"] for r in pretrained)
    assert {r["pretrain_id"] for r in pretrained} == {cached.stem}
    assert set(meta["pretrain_cost"]) == {"samples", "train_flops", "eval_flops", "device_seconds",
                                          "eval_device_seconds", "wall_seconds", "energy_joules",
                                          "generation_seconds"}
    # the runs' split is the one the pretraining kept its images out of
    split = json.loads((tmp_path / "a" / "split.json").read_text())
    assert meta["pretrain_source"]["rows"] == len(split["train"])
    assert meta["pretrain_source"]["rows_digest"] == ssl._digest_of(np.asarray(split["train"]))
    # the fine-tuning runs started from the self-supervised encoder
    encoder = load_checkpoint(cached)["state_dict"]["features.0.weight"]
    scratch = load_checkpoint(tmp_path / "a/runs/scratch__seed0/final.pt")["state_dict"]["features.0.weight"]
    assert not torch.equal(encoder, scratch)


def test_without_lightly_an_ssl_suite_says_what_to_install(cli, tmp_path, monkeypatch):
    suite = write_suite(tmp_path, seeds=1, epochs=1,
                        extra=SSL_SECTION.format(method="simclr", source='catalog = "train"'))
    for name in [m for m in sys.modules if m == "lightly" or m.startswith("lightly.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lightly", None)
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-report")
    assert code == 2
    assert "pip install 'galbench[ssl]'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("pretrained", "message"), [
    ('method = "supervised"\ncatalog = "train"', "needs a self-supervised method"),
    ('catalog = "x.fits"\nviews = { flips = false }', "only for self-supervised"),
    ('method = "byol"\ncatalog = "train"\ntemperature = 0.1', "temperature applies to method = 'simclr'"),
    ('method = "simclr"\ncatalog = "train"\nviews = { zom = [0.5, 1.0] }', "did you mean 'zoom'"),
    ('method = "simclr"\ncatalog = "train"\nviews = { zoom = [0.9, 0.5] }', "low <= high"),
    ('method = "simclr"\ncatalog = "train"\nbatch_size = 1', "batch_size >= 2"),
    ('method = "dino"\ncatalog = "train"', "method"),
])
def test_bad_ssl_keys_are_refused_before_any_work(cli, tmp_path, pretrained, message):
    extra = f'\n[[variant]]\nname = "p"\nmodel = "alexnet-tiny"\ninit = "pretrained:p"\n\n[[pretrained]]\nname = "p"\n{pretrained}\n'
    suite = write_suite(tmp_path, extra=extra)
    code, _, err = cli("run", suite, "--out", tmp_path / "out")
    assert code == 2 and message in err, err
    assert not (tmp_path / "out").exists()


def _galbench(*args):
    return [sys.executable, "-m", "galbench.cli", *map(str, args)]


def test_sigkill_mid_pretraining_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    write_catalog(tmp_path / "data.fits", make_catalog(n=100, size=64, seed=4))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    args = ["--data", tmp_path / "data.fits", "--probe-data", tmp_path / "data.fits", "--model", "alexnet-tiny",
            "--epochs", 6, "--batch-size", 16, "--probes", 3, "--method", "byol", "--device", "cpu"]
    whole, killed = tmp_path / "whole.pt", tmp_path / "killed.pt"
    subprocess.run(_galbench("pretrain", "ssl", whole, *args), env=env, check=True, capture_output=True)

    process = subprocess.Popen(_galbench("pretrain", "ssl", killed, *args), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    work = tmp_path / "killed.pt.work"
    deadline = time.time() + 300
    while time.time() < deadline:  # epoch 3 logged: the checkpoint of epoch 2 (and its probe) is on disk
        if (work / "last.pt").exists() and '"epoch": 3,' in (work / "events.jsonl").read_text():
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not killed.exists() and (work / "last.pt").exists()

    rerun = subprocess.run(_galbench("pretrain", "ssl", killed, *args), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    events = [json.loads(line) for line in (tmp_path / "killed.events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("run_start") == 1
    assert any(e["event"] == "run_resume" and e["epoch"] >= 2 for e in events)
    a, b = load_checkpoint(whole), load_checkpoint(killed)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    for key in ("probe_curve", "ssl_loss_curve"):
        assert a["meta"][key] == b["meta"][key]
    for key in ("samples", "train_flops", "eval_flops"):
        assert a["meta"]["pretrain_cost"][key] == b["meta"]["pretrain_cost"][key]
    assert "k-NN" in rerun.stderr and "wrote" in rerun.stderr  # "wrote" lines go to stderr, as every command's
