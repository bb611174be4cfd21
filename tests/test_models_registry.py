"""The registry: names resolve (galbench's own and any timm name), listing is cheap, and its facts are measured."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from galbench.errors import GalbenchError
from galbench.models.registry import ModelFacts, build_model, check_model_name, list_models

HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm models need the optional timm package")
MODELS = [pytest.param(e.name, marks=needs_timm) if e.name.startswith("timm:") else e.name for e in list_models()]

# Published sizes, independent of galbench: torchvision's AlexNet docs (61.1 M parameters, 0.71 GFLOPS, which
# torchvision counts as multiply-adds) and the timm model cards on the Hugging Face hub ("Params (M)", "GMACs"
# at 224 px, rounded to one decimal).
PUBLISHED = {"alexnet": (61.1, 0.71), "timm:resnet18": (11.7, 1.8), "timm:resnet50": (25.6, 4.1),
             "timm:convnext_atto": (3.7, 0.6), "timm:efficientnet_b0": (5.3, 0.4),
             "timm:vit_tiny_patch16_224": (5.7, 1.1)}


def measure_facts(name: str) -> ModelFacts:
    """Backbone parameters (at 224 px), embedding size and forward FLOPs at 64 and 224 px, counted afresh.

    On the meta device nothing is computed, so this is quick; there, attention runs as plain matrix
    products, which torch counts (test_accounting checks the CPU count against it).
    """
    flops = []
    with torch.device("meta"):
        for size in (64, 224):
            model = build_model(name, 3, size).eval()
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                model(torch.zeros(1, 3, size, size))
            flops.append(counter.get_total_flops())
    head = model.get_submodule(model.head_name)
    backbone = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in head.parameters())
    return ModelFacts(backbone, head.in_features, *flops)


@pytest.mark.parametrize("name", MODELS)
def test_registered_facts_are_what_torch_counts(name):
    facts = list_models(name)[0].facts
    measured = measure_facts(name)
    assert facts == measured, f"the registry entry of {name} needs {measured}"
    with torch.device("meta"):
        assert sum(p.numel() for p in build_model(name, 5, 224).parameters()) == facts.parameters(5)


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_timm) if n.startswith("timm:") else n for n in PUBLISHED])
def test_registered_facts_agree_with_published_sizes(name):
    facts = list_models(name)[0].facts
    published_millions, published_gmacs = PUBLISHED[name]
    assert facts.parameters(1000) / 1e6 == pytest.approx(published_millions, abs=0.051)
    flops = facts.forward_flops_224px
    if name == "timm:vit_tiny_patch16_224":
        # the card's counter misses fused attention: scores and weighted sum, 2 products of 197 x 197 x 64
        # per head (3 heads) and block (12 blocks), 2 FLOPs per multiply-add
        flops -= 2 * 2 * 197 * 197 * 64 * 3 * 12
    gmacs = flops / 2e9  # FlopCounterMode counts a multiply-add as two FLOPs
    assert abs(gmacs - published_gmacs) <= 0.06 + 0.03 * published_gmacs  # cards round; counters differ on norms


def test_listing_builds_nothing_and_needs_no_timm(tmp_path):
    code = ("import sys; from galbench.cli import main; rc = main(['models', '--json']); "
            "print('TIMM-IMPORTED' if 'timm' in sys.modules else 'NO-TIMM', file=sys.stderr); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr
    assert "NO-TIMM" in done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert {"alexnet-tiny", "timm:resnet18", "timm:resnet50", "timm:convnext_atto", "timm:efficientnet_b0",
            "timm:vit_tiny_patch16_224"} <= set(rows)
    assert rows["timm:resnet50"]["backbone_parameters"] == list_models("timm:resnet50")[0].facts.backbone_parameters
    assert rows["timm:resnet50"]["source"] == "timm" and rows["alexnet"]["source"] == "galbench"


def test_models_command_table_pattern_and_no_match(cli):
    code, stdout, err = cli("models", "timm:*")
    assert code == 0, err
    assert "timm:convnext_atto" in stdout and "alexnet-tiny" not in stdout
    assert "timm:NAME" in err
    code, _, err = cli("models", "nothing*")
    assert code == 2 and "no registered model matches 'nothing*'" in err and len(err.strip().splitlines()) == 1


def test_unknown_galbench_names_get_close_matches():
    with pytest.raises(GalbenchError, match="unknown model 'alexnet-tine'.*did you mean alexnet-tiny"):
        check_model_name("alexnet-tine")


@needs_timm
def test_any_timm_name_resolves_lazily_and_typos_get_close_matches():
    check_model_name("timm:mobilenetv3_small_050")  # not registered: any name timm knows works
    assert build_model("timm:mobilenetv3_small_050", 3, 64).head_name == "classifier"
    with pytest.raises(GalbenchError, match=r"timm has no model 'resnet1'.*did you mean .*timm:resnet18"):
        check_model_name("timm:resnet1")
    with pytest.raises(GalbenchError, match=r"no pretrained tag 'resnet18.nope'.*a1_in1k"):
        check_model_name("timm:resnet18.nope")
    check_model_name("timm:resnet18.a2_in1k")


def test_without_timm_a_timm_model_says_what_to_install(monkeypatch, cli, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now fails as if it were not installed
    for call in (lambda: check_model_name("timm:resnet18"), lambda: build_model("timm:resnet18", 3, 64)):
        with pytest.raises(GalbenchError, match=r"timm models need the timm package \(pip install 'galbench\[timm\]'\)"):
            call()
    assert build_model("alexnet-tiny", 3, 64) is not None
    code, stdout, err = cli("models")
    assert code == 0 and "timm:resnet18" in stdout and "pip install 'galbench[timm]'" in err
    code, _, err = cli("pretrain", "fractal", tmp_path / "f.pt", "--model", "timm:resnet18", "--classes", 2,
                       "--per-class", 2, "--epochs", 1, "--device", "cpu")
    assert code == 2 and err.strip().splitlines()[-1].endswith("(pip install 'galbench[timm]')")
    assert not (tmp_path / "f.pt").exists()
