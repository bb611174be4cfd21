"""Where initial weights come from: scratch, ImageNet (torch's cache or a file), galbench checkpoints."""

from __future__ import annotations

import pytest
import torch
import torchvision

from galbench.errors import GalbenchError
from galbench.models.finetune import apply_finetune_policy
from galbench.models.registry import build_model
from galbench.models.weights import imagenet_state_dict, load_checkpoint
from tests.conftest import write_suite

WEIGHTS_NAME = "alexnet-owt-7be5be79.pth"


@pytest.fixture
def fake_imagenet(tmp_path, monkeypatch):
    """torchvision-format AlexNet weights (random, seeded) placed in torch's hub cache under TORCH_HOME."""
    torch.manual_seed(123)
    state = torchvision.models.alexnet().state_dict()
    home = tmp_path / "torch-home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, home / "hub" / "checkpoints" / WEIGHTS_NAME)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return state, home / "hub" / "checkpoints" / WEIGHTS_NAME


def test_imagenet_weights_load_from_torch_hub_cache(fake_imagenet):
    state, _ = fake_imagenet
    loaded = imagenet_state_dict()
    assert torch.equal(loaded["features.0.weight"], state["features.0.weight"])


def test_imagenet_init_with_head_only_finetuning_keeps_the_backbone(cli, tmp_path, fake_imagenet):
    state, _ = fake_imagenet
    extra = '\n[[variant]]\nname = "imagenet"\nmodel = "alexnet"\ninit = "imagenet"\nfinetune = "head"\n'
    suite = write_suite(tmp_path, seeds=1, epochs=1, extra=extra)
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out)
    assert code == 0, err
    final = load_checkpoint(out / "runs/imagenet__seed0/final.pt")
    for key in ("features.0.weight", "features.10.bias", "classifier.1.weight", "classifier.4.weight"):
        assert torch.equal(final["state_dict"][key], state[key]), key
    assert final["state_dict"]["classifier.6.weight"].shape == (3, 4096)
    assert final["meta"]["init"] == "imagenet"


def test_imagenet_path_init(tmp_path, fake_imagenet):
    _, path = fake_imagenet
    assert torch.equal(imagenet_state_dict(path)["features.3.weight"], fake_imagenet[0]["features.3.weight"])


def test_imagenet_offline_without_cache_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(GalbenchError) as info:
        imagenet_state_dict()
    message = str(info.value)
    assert WEIGHTS_NAME in message and str(tmp_path / "empty-torch-home" / "hub" / "checkpoints") in message


def test_imagenet_on_a_narrow_model_is_rejected(cli, tmp_path, fake_imagenet):
    extra = '\n[[variant]]\nname = "bad"\nmodel = "alexnet-small"\ninit = "imagenet"\n'
    code, _, err = cli("run", write_suite(tmp_path, seeds=1, epochs=1, extra=extra), "--out", tmp_path / "o")
    assert code == 2 and "ImageNet weights fit only model 'alexnet'" in err


def test_checkpoint_init_reuses_a_run_and_truncated_checkpoints_fail_cleanly(cli, tmp_path):
    first = tmp_path / "first"
    assert cli("run", write_suite(tmp_path, seeds=1, epochs=1), "--out", first)[0] == 0
    source = first / "runs/scratch__seed0/final.pt"
    extra = f'\n[[variant]]\nname = "warm"\nmodel = "alexnet-tiny"\ninit = "checkpoint:{source}"\nfinetune = "frozen:features.10"\n'
    second = tmp_path / "second"
    code, _, err = cli("run", write_suite(tmp_path, name="warm", seeds=1, epochs=1, extra=extra), "--out", second)
    assert code == 0, err
    warm = load_checkpoint(second / "runs/warm__seed0/final.pt")["state_dict"]
    assert torch.equal(warm["features.0.weight"], load_checkpoint(source)["state_dict"]["features.0.weight"])
    broken = tmp_path / "broken.pt"
    broken.write_bytes(source.read_bytes()[:1000])
    extra_broken = extra.replace(str(source), str(broken))
    code, _, err = cli("run", write_suite(tmp_path, name="broken", seeds=1, epochs=1, extra=extra_broken),
                       "--out", tmp_path / "third")
    assert code == 2 and "not a readable checkpoint" in err and str(broken) in err
    assert len(err.strip().splitlines()) == 1


def test_finetune_policies_freeze_the_right_layers():
    model = build_model("alexnet-tiny", 3)
    apply_finetune_policy(model, "frozen:features.3")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "features.0.weight" not in trainable and "features.3.weight" not in trainable
    assert "features.6.weight" in trainable and "classifier.6.weight" in trainable
    head = build_model("alexnet-tiny", 3)
    apply_finetune_policy(head, "head")
    assert {n for n, p in head.named_parameters() if p.requires_grad} == {"classifier.6.weight", "classifier.6.bias"}
    with pytest.raises(GalbenchError, match="no layer 'features.99'"):
        apply_finetune_policy(build_model("alexnet-tiny", 3), "frozen:features.99")
