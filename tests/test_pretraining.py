"""Pretraining offline: deterministic fractal sets, checkpoints that carry their cost, cache reuse."""

from __future__ import annotations

import json

import numpy as np
import torch

from galbench.data.fractal import FractalParams, class_systems, generate
from galbench.models.weights import load_checkpoint
from tests.conftest import write_suite


def test_fractal_sets_are_deterministic_whatever_the_workers():
    params = FractalParams(classes=4, per_class=8, size=48, seed=7)
    a, b = generate(params, workers=1), generate(params, workers=2)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.class_counts() == {f"ifs{k:03d}": 8 for k in range(4)}
    assert not np.array_equal(a.images, generate(FractalParams(classes=4, per_class=8, size=48, seed=8)).images)


def test_every_class_system_is_contractive_and_instances_differ():
    systems = class_systems(FractalParams(classes=6, per_class=4, size=64, seed=1))
    for system in systems:
        largest = np.linalg.svd(system[:, :4].reshape(-1, 2, 2), compute_uv=False)[:, 0]
        assert (largest <= 0.9 + 1e-9).all()
    images = generate(FractalParams(classes=3, per_class=6, size=64, seed=1)).images
    assert len({images[k].tobytes() for k in range(6)}) == 6  # intra-class variation
    coverage = (images.max(axis=1) > 0).mean(axis=(1, 2))
    assert (coverage > 0.02).all() and (coverage < 0.9).all()


def test_pretrain_fractal_checkpoint_carries_source_and_cost(cli, tmp_path):
    out = tmp_path / "fractal.pt"
    code, stdout, err = cli("pretrain", "fractal", out, "--classes", 4, "--per-class", 20, "--epochs", 2,
                            "--model", "alexnet-tiny", "--device", "cpu")
    assert code == 0, err
    checkpoint = load_checkpoint(out)
    meta = checkpoint["meta"]
    assert checkpoint["classes"] == [f"ifs{k:03d}" for k in range(4)] and checkpoint["model"] == "alexnet-tiny"
    assert meta["pretrain_source"]["kind"] == "fractal" and meta["pretrain_source"]["per_class"] == 20
    cost = meta["pretrain_cost"]
    # 80 images, split 85/10/5 per class -> 17 training images per class, 2 epochs
    assert cost["samples"] == 2 * 4 * 17
    assert not (tmp_path / "fractal.pt.work").exists()  # the work folder goes once the checkpoint is written
    assert cost["train_flops"] > 0 and cost["train_flops"] % cost["samples"] == 0
    assert cost["device_seconds"] > 0 and cost["generation_seconds"] > 0 and cost["energy_joules"] is None
    assert "wrote" in err and "TFLOPs" in err  # "wrote ..." goes to stderr, as for every command


def test_suite_pretrains_once_reuses_the_cache_and_spreads_the_cost(cli, tmp_path):
    extra = ('\n[[variant]]\nname = "fractal"\nmodel = "alexnet-tiny"\ninit = "fractal"\n'
             'fractal = { classes = 4, per_class = 20, size = 64, epochs = 1 }\n')
    suite = write_suite(tmp_path, seeds=2, epochs=1, extra=extra)
    assert cli("run", suite, "--out", tmp_path / "a", "--no-report")[0] == 0
    from galbench.fileio import cache_dir

    cached = sorted(cache_dir("pretrain").glob("fractal-*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert cli("run", suite, "--out", tmp_path / "b", "--no-report")[0] == 0
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not made again
    runs = json.loads((tmp_path / "a" / "results.json").read_text())["runs"]
    fractal = [r for r in runs if r["variant"] == "fractal"]
    assert all(r["pretrain_shared_by"] == 2 for r in fractal)
    assert fractal[0]["pretrain_cost"] == load_checkpoint(cached[0])["meta"]["pretrain_cost"]
    assert all(r["pretrain_cost"] == {} and r["pretrain_shared_by"] == 0 for r in runs if r["variant"] == "scratch")
    # the fractal-initialised runs started from the pretrained backbone
    pretrained = load_checkpoint(cached[0])["state_dict"]["features.0.weight"]
    scratch = load_checkpoint(tmp_path / "a/runs/scratch__seed0/final.pt")["state_dict"]["features.0.weight"]
    assert not torch.equal(pretrained, scratch)


def test_report_bills_the_whole_pretraining_and_says_when_it_pays_back(tmp_path):
    """A pretraining is counted in full for one model, never divided over the runs that share it."""
    from galbench.analysis.report import build_report, cost_table

    def run(variant, seed, flops):
        return {"variant": variant, "seed": seed, "test_accuracy": 0.8, "best_val_accuracy": 0.8,
                "init": "fractal" if variant == "fractal" else "scratch",
                "pretrain_cost": {"train_flops": 3e15, "device_seconds": 7200.0} if variant == "fractal" else None,
                "totals": {"epochs": 2.0, "train_flops": flops, "device_seconds": 3600.0},
                "thresholds": {"0.5": {"reached": True, "epochs": 2.0, "samples": 100, "train_flops": flops,
                                       "device_seconds": 3600.0, "energy_joules": None}}}

    runs = [run("scratch", s, 2e15) for s in range(3)] + [run("fractal", s, 1e15) for s in range(3)]
    suite = {"suite": {"name": "t", "seeds": [0, 1, 2], "thresholds": [0.5]}, "baseline": "scratch",
             "variant": [{"name": "scratch", "model": "alexnet-tiny", "init": "scratch"},
                         {"name": "fractal", "model": "alexnet-tiny", "init": "fractal"}]}
    report = build_report(tmp_path, suite, runs)
    flops = {row["variant"]: row for row in cost_table(report, "train_flops", None).rows}
    # 3 PFLOPs once + k fine-tunes of 1 <= k trainings of 2 from k = 3 on
    assert (flops["fractal"]["pretraining"], flops["fractal"]["one_model"], flops["fractal"]["break_even"]) == \
        ("3", "4", "3 fine-tunes")
    assert flops["scratch"]["break_even"] == "baseline" and not flops["scratch"].get("pretraining")
    seconds = {row["variant"]: row for row in cost_table(report, "device_seconds", None).rows}
    assert seconds["fractal"]["break_even"] == "never"  # fine-tuning takes as long as training from scratch


def test_a_pretraining_on_simulated_galaxies_bills_their_simulation(cli, tmp_path):
    """The seconds spent simulating the pretraining catalog are part of its cost, as a fractal set's are."""
    extra = ('\n[[variant]]\nname = "sim"\nmodel = "alexnet-tiny"\ninit = "pretrained:sim"\n\n'
             '[[pretrained]]\nname = "sim"\nsynth = { n = 40, size = 64, seed = 11 }\nepochs = 1\n')
    suite = write_suite(tmp_path, seeds=1, epochs=1, extra=extra)
    assert cli("run", suite, "--out", tmp_path / "a", "--no-report")[0] == 0
    from galbench.data.synth import synth_generation_seconds
    from galbench.fileio import cache_dir

    simulated = synth_generation_seconds({"n": 40, "size": 64, "seed": 11, "classes": "elliptical,spiral,edge-on",
                                          "star_probability": 0.3})
    assert simulated is not None and simulated > 0
    (cached,) = [p for p in cache_dir("pretrain").glob("catalog-*.pt")
                 if load_checkpoint(p)["meta"]["pretrain_source"].get("synth", {}).get("seed") == 11]
    assert load_checkpoint(cached)["meta"]["pretrain_cost"]["generation_seconds"] == simulated
