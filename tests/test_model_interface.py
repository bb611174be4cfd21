"""Every registered model follows one interface: features, head, embedding, head name, input size."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from galbench.errors import GalbenchError
from galbench.models.finetune import apply_finetune_policy
from galbench.models.registry import build_model, embed, embedding_size, list_models

HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm models need the optional timm package")
MODELS = [pytest.param(e.name, marks=needs_timm) if e.name.startswith("timm:") else e.name for e in list_models()]


@pytest.mark.parametrize("name", MODELS + [pytest.param("timm:mobilenetv3_small_050", marks=needs_timm)])
def test_forward_is_head_of_features_and_embedding_is_penultimate(name):
    torch.manual_seed(0)
    size = 64 if name.startswith("alexnet") else 32  # AlexNet needs 63 px; the rest are quicker at 32
    model = build_model(name, 4, size).eval()
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = model(images)
        vector = embed(model, images)
        head = model.get_submodule(model.head_name)
        assert logits.shape == (2, 4)
        assert vector.shape == (2, embedding_size(model))
        torch.testing.assert_close(head(vector), logits)


@pytest.mark.parametrize("name", MODELS)
def test_head_policy_trains_only_the_head(name):
    model = build_model(name, 3)
    apply_finetune_policy(model, "head")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{model.head_name}.weight", f"{model.head_name}.bias"}


def test_alexnet_refuses_inputs_too_small_for_its_pooling():
    build_model("alexnet-tiny", 3, 63)(torch.zeros(1, 3, 63, 63))
    with pytest.raises(GalbenchError, match="at least 63 px, got 62"):
        build_model("alexnet-tiny", 3, 62)


@needs_timm
def test_a_vit_is_built_for_the_input_size_and_refuses_sizes_its_patches_do_not_divide():
    model = build_model("timm:vit_tiny_patch16_224", 3, 64).eval()
    assert model.pos_embed.shape[1] == 1 + (64 // 16) ** 2
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(GalbenchError, match="16 px patches; 72 px is not a multiple"):
        build_model("timm:vit_tiny_patch16_224", 3, 72)
    assert build_model("timm:resnet18", 3, 72)(torch.zeros(1, 3, 72, 72)).shape == (1, 3)


def test_the_batch_norm_alexnet_exports_within_parity(tmp_path):
    """alexnet-small-bn (the GZ1 recipe's model): batch norm after every convolution, exported like any model."""
    import numpy as np

    from galbench.inference.export import export_onnx
    from galbench.models.weights import CHECKPOINT_FORMAT

    torch.manual_seed(0)
    model = build_model("alexnet-small-bn", 3, 64)
    norms = [m for m in model.features if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 5 and all(m.bias is None for m in model.features if isinstance(m, torch.nn.Conv2d))
    for norm in norms:  # statistics that are not the identity, so the export has something to get wrong
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    checkpoint = {"format": CHECKPOINT_FORMAT, "model": "alexnet-small-bn", "classes": ["a", "b", "c"],
                  "image_size": 64, "crop": 1.0, "state_dict": model.state_dict(), "meta": {}}
    torch.save(checkpoint, tmp_path / "bn.pt")
    images = np.random.default_rng(0).integers(0, 256, (8, 3, 64, 64), dtype=np.uint8)
    meta = export_onnx(tmp_path / "bn.pt", tmp_path / "bn.onnx", images)  # raises if ONNX Runtime disagrees
    assert float(meta["parity_max_abs_logit_difference"]) <= 1e-3 and meta["model"] == "alexnet-small-bn"
    # and it computes what the trained model computes: the export's own torch twin is no reference, since a
    # change to the weights while exporting (a training-mode pass moving the norms' statistics) fools parity
    import onnxruntime as ort

    from galbench.data.tensors import Normalizer

    model.eval()
    with torch.no_grad():
        expected = model(Normalizer()(torch.from_numpy(images))).numpy()
    session = ort.InferenceSession(str(tmp_path / "bn.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["logits"], {"images": images})[0], expected, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name", ["alexnet-small-bn", "alexnet-tiny"])
@pytest.mark.parametrize("size", [64, 112, 224, 256])
def test_preparing_for_export_keeps_the_function_and_every_statistic(name, size):
    """The pool is replaced (and, up to 224 px, folded into the first linear layer), but the model computes
    what it computed, logits and embeddings, and no batch-norm statistic moves."""
    torch.manual_seed(0)
    model = build_model(name, 3, size).train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
    norms_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    images = torch.randn(4, 3, size, size)
    model.eval()
    with torch.no_grad():
        logits, embeddings = model(images), model.forward_head(model.forward_features(images), pre_logits=True)
    model.train()
    model.prepare_for_export(size)
    assert model.training  # the mode is given back as it was
    after = model.state_dict()
    for key, value in norms_before.items():
        assert torch.equal(after[key], value), key
    assert isinstance(model.avgpool, torch.nn.Identity) == (size <= 224)  # feature maps of at most 6 x 6
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images), logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.forward_head(model.forward_features(images), pre_logits=True), embeddings,
                                   atol=1e-5, rtol=1e-5)
