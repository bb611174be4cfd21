"""timm models through galbench's own paths: FLOP accounting, fine-tuning policies and frozen batch norms,
training (channels_last, compile) and ONNX export with its parity check."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from galbench.experiment.accounting import flops_per_sample
from galbench.experiment.train import Trainer
from galbench.inference.export import export_onnx
from galbench.models.finetune import BATCH_NORMS, apply_finetune_policy, keep_frozen_norms_in_eval
from galbench.models.registry import build_model, list_models
from tests.conftest import make_catalog
from tests.model_runs import tiny_trainer

pytest.importorskip("timm", reason="timm models need the optional timm package")

TIMM_MODELS = [entry.name for entry in list_models("timm:*")]
SIZE = 32  # every listed timm model takes 32 px (the ViT's 16 px patches divide it), and it is quick


def meta_forward_flops(name: str) -> int:
    """One image's forward FLOPs counted on the meta device, where attention runs as plain matrix products."""
    with torch.device("meta"):
        model = build_model(name, 3, SIZE).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, 3, SIZE, SIZE))
    return counter.get_total_flops()


def test_counting_flops_leaves_batch_norm_statistics_alone():
    model = build_model("timm:resnet18", 3, SIZE)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    flops_per_sample(model, SIZE, torch.device("cpu"), backward=True)  # a training-mode pass, on a copy
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_a_depthwise_convolution_backward_is_counted_once():
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 7, padding=3, groups=64))
    first, depthwise = 2 * 16 * 16 * 9 * 3 * 64, 2 * 16 * 16 * 49 * 64  # multiply-adds x 2, per image
    assert flops_per_sample(model, 16, torch.device("cpu"), backward=False) == first + depthwise
    # backward: the first layer's weight gradient (the image needs none), the depthwise layer's input and
    # weight gradients, each as dear as its forward
    assert flops_per_sample(model, 16, torch.device("cpu"), backward=True) == 2 * first + 3 * depthwise


def test_vit_attention_flops_on_the_cpu_match_the_hand_count():
    model = build_model("timm:vit_tiny_patch16_224", 3, SIZE)
    with_attention = flops_per_sample(model, SIZE, torch.device("cpu"), backward=False)
    counter = FlopCounterMode(display=False)  # torch's own counter, which misses the CPU attention kernel
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, SIZE, SIZE))
    tokens = 1 + (SIZE // 16) ** 2
    assert with_attention - counter.get_total_flops() == 2 * 2 * tokens * tokens * 64 * 3 * 12


FROZEN = {  # policy, then what it must freeze and what it must leave trainable, by module prefix
    "timm:resnet18": ("frozen:layer2", ["conv1", "bn1", "layer1", "layer2"], ["layer3", "layer4", "fc"]),
    "timm:convnext_atto": ("frozen:stages.1", ["stem", "stages.0", "stages.1"], ["stages.2", "stages.3", "head"]),
    "timm:efficientnet_b0": ("frozen:blocks.3", ["conv_stem", "bn1"] + [f"blocks.{i}" for i in range(4)],
                             ["blocks.4", "blocks.5", "blocks.6", "conv_head", "bn2", "classifier"]),
    "timm:vit_tiny_patch16_224": ("frozen:blocks.5", ["cls_token", "pos_embed", "patch_embed"]
                                  + [f"blocks.{i}" for i in range(6)],
                                  [f"blocks.{i}" for i in range(6, 12)] + ["norm", "head"]),
}


@pytest.mark.parametrize("name", list(FROZEN))
def test_frozen_policies_follow_timm_module_names(name):
    policy, frozen, trainable = FROZEN[name]
    model = build_model(name, 3, SIZE)
    apply_finetune_policy(model, policy)
    for parameter_name, parameter in model.named_parameters():
        in_frozen = any(parameter_name == p or parameter_name.startswith(p + ".") for p in frozen)
        in_trainable = any(parameter_name.startswith(p + ".") for p in trainable)
        assert in_frozen != in_trainable, parameter_name  # every parameter is in exactly one list
        assert parameter.requires_grad == in_trainable, parameter_name


def test_frozen_batch_norms_stay_in_eval_mode_after_train():
    model = build_model("timm:resnet18", 3, SIZE)
    apply_finetune_policy(model, "frozen:layer2")
    model.train()
    keep_frozen_norms_in_eval(model)
    modes = {name: module.training for name, module in model.named_modules() if isinstance(module, BATCH_NORMS)}
    assert not modes["bn1"] and not modes["layer1.0.bn1"] and not modes["layer2.1.bn2"]
    assert modes["layer3.0.bn1"] and modes["layer4.1.bn2"]


def _trainer(name: str, run_dir, finetune: str = "all", **train) -> Trainer:
    return tiny_trainer(name, run_dir, SIZE, finetune, **train)


@pytest.fixture(scope="module", params=TIMM_MODELS)
def trained(request, tmp_path_factory):
    """Each listed model after 2 training steps (channels_last) and an evaluation through galbench's Trainer."""
    name = request.param
    run_dir = tmp_path_factory.mktemp(name.replace(":", "-"))
    trainer = _trainer(name, run_dir, channels_last=True)
    losses = _record_losses(trainer)
    before = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    trainer.begin_session()
    trainer.train_one_epoch()
    trainer.save_final()  # best.pt and final.pt, written in the background
    trainer.writer.wait()
    return name, trainer, before, losses, run_dir


def _record_losses(trainer: Trainer) -> list[torch.Tensor]:
    losses, criterion = [], trainer.criterion
    trainer.criterion = lambda logits, labels: losses.append(criterion(logits, labels)) or losses[-1]
    return losses


def test_every_listed_model_trains_through_the_trainer_and_counts_its_flops(trained):
    name, trainer, before, losses, run_dir = trained
    assert len(losses) == 2 and all(torch.isfinite(loss) for loss in losses)
    after = trainer.model.state_dict()
    for parameter_name, _ in trainer.model.named_parameters():
        assert not torch.equal(before[parameter_name], after[parameter_name]), parameter_name
    assert (run_dir / "best.pt").exists() and trainer.costs.samples == 16
    assert trainer.eval_flops == meta_forward_flops(name)  # CPU count, attention included
    assert 2 * trainer.eval_flops < trainer.train_flops <= 3 * trainer.eval_flops  # input and weight gradients
    assert trainer.costs.train_flops == 16 * trainer.train_flops


def test_a_compiled_model_trains_through_the_trainer(tmp_path, monkeypatch):
    """torch.compile with the aot_eager backend: graph capture and autograd tracing as inductor does them,
    without inductor's C++ code generation, which takes minutes per model on a CPU."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: compile_(model, backend="aot_eager"))
    trainer = _trainer("timm:vit_tiny_patch16_224", tmp_path, compile=True)
    losses = _record_losses(trainer)
    trainer.begin_session()
    trainer.train_one_epoch()
    assert trainer.step_model is not trainer.model and len(losses) == 2
    assert all(torch.isfinite(loss) for loss in losses) and trainer.best_checkpoint is not None


def test_every_listed_model_exports_to_onnx_within_parity(trained, tmp_path):
    name, _, _, _, run_dir = trained
    images = make_catalog(n=4, size=SIZE, seed=1).images
    out = tmp_path / "model.onnx"
    meta = export_onnx(run_dir / "best.pt", out, images)  # raises where ONNX Runtime and PyTorch disagree
    assert meta["model"] == name and float(meta["parity_max_abs_logit_difference"]) <= 1e-3
    assert meta["parity_argmax_agreement"] == "1.0000"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    batch = session.run(["logits"], {"images": images[:2]})[0]  # the batch dimension is dynamic
    assert batch.shape == (2, 3)


def test_frozen_batch_norm_statistics_stay_fixed_through_training(tmp_path):
    trainer = _trainer("timm:resnet18", tmp_path, finetune="frozen:layer2")
    before = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    trainer.begin_session()
    trainer.train_one_epoch()
    after = trainer.model.state_dict()
    for key in ("bn1.running_mean", "layer1.0.bn1.running_var", "layer2.1.bn2.running_mean", "layer2.0.conv1.weight"):
        assert torch.equal(before[key], after[key]), key
    for key in ("layer3.0.bn1.running_mean", "layer4.1.bn2.running_var", "layer3.0.conv1.weight", "fc.weight"):
        assert not torch.equal(before[key], after[key]), key
