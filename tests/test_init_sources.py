"""Where initial weights come from: scratch, ImageNet (torch's or the Hugging Face hub cache, or a file), Zoobot
encoders, galbench checkpoints and pretrainings, for AlexNet and timm models."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from galbench.data.fractal import FractalParams
from galbench.errors import GalbenchError
from galbench.experiment.pretrain import pretrain_fractal, pretrain_on_catalog
from galbench.models.finetune import apply_finetune_policy
from galbench.models.registry import build_model
from galbench.models.timm_models import imagenet_backbone
from galbench.models.weights import imagenet_state_dict, load_checkpoint
from galbench.models.zoobot import zoobot_backbone
from tests.conftest import make_catalog, write_suite
from tests.model_runs import tiny_trainer

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


# --- timm models: ImageNet and Zoobot weights through the Hugging Face hub cache, pretraining --------------

REVISION = "0123456789abcdef0123456789abcdef01234567"


def write_hub_repo(cache, repo_id: str, files: dict[str, bytes]):
    """A repository in the hub cache as huggingface_hub writes it: blobs named by their hash, a snapshot of
    symlinks to them, and refs/main naming the snapshot. Large (LFS) files' blobs are named by SHA-256."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = folder / "snapshots" / REVISION
    for path in (folder / "blobs", snapshot, folder / "refs"):
        path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        lfs = name.endswith((".safetensors", ".bin"))
        digest = hashlib.sha256(data) if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data)  # git's blob id
        blob = folder / "blobs" / digest.hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (folder / "refs" / "main").write_text(REVISION)
    return folder


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty, offline Hugging Face hub cache."""
    pytest.importorskip("timm", reason="timm models need the optional timm package")
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def timm_state(architecture: str, num_classes: int = 1000, seed: int = 7) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(architecture, num_classes=num_classes).state_dict()


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({key: value.contiguous() for key, value in state.items()})


def torch_bytes(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def assert_backbone_equal(loaded: dict, source: dict, head: str):
    keys = [key for key in source if not key.startswith(head + ".")]
    assert keys and all(torch.equal(loaded[key], source[key]) for key in keys)


def test_timm_imagenet_weights_load_from_the_hub_cache_offline(hub_cache):
    state = timm_state("convnext_atto")
    write_hub_repo(hub_cache, "timm/convnext_atto.d2_in1k", {"model.safetensors": safetensors_bytes(state),
                                                               "config.json": b'{"architecture": "convnext_atto"}'})
    loaded = imagenet_backbone("convnext_atto", 64)
    assert_backbone_equal(loaded, state, "head.fc")
    assert not any(key.startswith("head.fc") for key in loaded)  # ImageNet's 1000-class head stays behind


def test_vit_imagenet_weights_are_resampled_to_the_input_size(hub_cache):
    state = timm_state("vit_tiny_patch16_224")
    write_hub_repo(hub_cache, "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                   {"model.safetensors": safetensors_bytes(state)})
    loaded = imagenet_backbone("vit_tiny_patch16_224", 64)
    assert torch.equal(loaded["blocks.11.mlp.fc2.weight"], state["blocks.11.mlp.fc2.weight"])
    position = state["pos_embed"]  # (1, 1 + 14 x 14, 192): the class token's, then a 14 x 14 grid
    assert loaded["pos_embed"].shape == (1, 1 + 4 * 4, 192)
    assert torch.equal(loaded["pos_embed"][:, :1], position[:, :1])
    grid = position[:, 1:].reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bicubic", antialias=True)
    torch.testing.assert_close(loaded["pos_embed"][:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 16, 192))


def test_timm_imagenet_offline_without_cache_says_which_file_to_put_where(hub_cache):
    with pytest.raises(GalbenchError) as info:
        imagenet_backbone("convnext_atto", 64)
    message = str(info.value)
    assert str(hub_cache / "models--timm--convnext_atto.d2_in1k") in message
    assert "hf download timm/convnext_atto.d2_in1k model.safetensors" in message
    assert "https://huggingface.co/timm/convnext_atto.d2_in1k/resolve/main/model.safetensors" in message
    assert 'imagenet:PATH' in message and "\n" not in message


def test_without_a_network_nothing_is_attempted_and_the_error_comes_at_once(hub_cache, monkeypatch):
    import huggingface_hub

    from galbench.models import hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub.socket, "getaddrinfo", lambda *args: (_ for _ in ()).throw(OSError("no name")))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *args, **kwargs: pytest.fail("tried to download"))
    with pytest.raises(GalbenchError, match="not cached and cannot be downloaded"):
        imagenet_backbone("convnext_atto", 64)


def test_truncated_foreign_and_mismatched_weights_are_refused_in_one_line(hub_cache, tmp_path):
    state = timm_state("convnext_atto")
    data = safetensors_bytes(state)
    folder = write_hub_repo(hub_cache, "timm/convnext_atto.d2_in1k", {"model.safetensors": data})
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(GalbenchError, match="corrupt file: its SHA-256 is .*truncated download"):
        imagenet_backbone("convnext_atto", 64)
    truncated = tmp_path / "half.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(GalbenchError, match="not a readable weights file"):
        imagenet_backbone("convnext_atto", 64, truncated)
    pickle_with_code = tmp_path / "evil.bin"
    pickle_with_code.write_bytes(torch_bytes({"stem.0.weight": Path("not a tensor")}))  # weights_only refuses it
    with pytest.raises(GalbenchError, match="not a readable weights file"):
        imagenet_backbone("convnext_atto", 64, pickle_with_code)
    other = tmp_path / "resnet18.safetensors"
    other.write_bytes(safetensors_bytes(timm_state("resnet18")))
    with pytest.raises(GalbenchError, match=r"weights lack 'stem.0.weight' \(\d+ of \d+ tensors missing\)"):
        imagenet_backbone("convnext_atto", 64, other)
    wrong_shape = tmp_path / "wrong.safetensors"
    wrong_shape.write_bytes(safetensors_bytes({**state, "stages.1.blocks.0.mlp.fc1.weight": torch.zeros(7, 7)}))
    with pytest.raises(GalbenchError, match="weights do not fit timm:convnext_atto .*size mismatch") as info:
        imagenet_backbone("convnext_atto", 64, wrong_shape)
    assert str(wrong_shape) in str(info.value) and "\n" not in str(info.value)


def test_timm_imagenet_run_with_head_only_finetuning_keeps_the_backbone(cli, tmp_path, hub_cache):
    state = timm_state("convnext_atto")
    write_hub_repo(hub_cache, "timm/convnext_atto.d2_in1k", {"model.safetensors": safetensors_bytes(state)})
    extra = '\n[[variant]]\nname = "imagenet"\nmodel = "timm:convnext_atto"\ninit = "imagenet"\nfinetune = "head"\n'
    out = tmp_path / "out"
    code, _, err = cli("run", write_suite(tmp_path, seeds=1, epochs=1, extra=extra), "--out", out, "--no-report")
    assert code == 0, err
    final = load_checkpoint(out / "runs/imagenet__seed0/final.pt")
    assert final["model"] == "timm:convnext_atto" and final["state_dict"]["head.fc.weight"].shape == (3, 320)
    assert_backbone_equal(final["state_dict"], state, "head.fc")


ZOOBOT_REPO = "mwalmsley/zoobot-encoder-convnext_atto"  # Zoobot's layout; a small architecture for the test


def zoobot_files(architecture: str = "convnext_atto", state=None) -> dict[str, bytes]:
    """What Zoobot publishes: config.json naming the timm architecture, and headless pytorch_model.bin."""
    config = {"architecture": architecture, "num_classes": 0, "pretrained_cfg": {"classifier": "head.fc"}}
    return {"config.json": json.dumps(config).encode(),
            "pytorch_model.bin": torch_bytes(state if state is not None else timm_state(architecture, 0))}


def test_zoobot_encoders_load_by_name_from_the_hub_cache_or_from_a_folder_or_file(hub_cache, tmp_path):
    files = zoobot_files()
    state = torch.load(io.BytesIO(files["pytorch_model.bin"]), weights_only=True)
    assert "head.norm.weight" in state and "head.fc.weight" not in state
    folder = write_hub_repo(hub_cache, ZOOBOT_REPO, files)
    assert_backbone_equal(zoobot_backbone("convnext_atto", "timm:convnext_atto", 64, tmp_path), state, "head.fc")
    local = tmp_path / "encoder"
    shutil.copytree(folder / "snapshots" / REVISION, local)  # what `hf download --local-dir` leaves
    assert_backbone_equal(zoobot_backbone("encoder", "timm:convnext_atto", 64, tmp_path), state, "head.fc")
    weights = zoobot_backbone(str(local / "pytorch_model.bin"), "timm:convnext_atto", 64, Path("/elsewhere"))
    assert_backbone_equal(weights, state, "head.fc")


def test_zoobot_mismatches_and_missing_encoders_get_one_line(hub_cache, tmp_path):
    with pytest.raises(GalbenchError) as info:
        zoobot_backbone("convnext_atto", "timm:convnext_atto", 64, tmp_path)
    message = str(info.value)
    assert str(hub_cache / "models--mwalmsley--zoobot-encoder-convnext_atto") in message
    assert f"hf download {ZOOBOT_REPO}" in message and "zoobot:PATH" in message
    write_hub_repo(hub_cache, ZOOBOT_REPO, zoobot_files())
    with pytest.raises(GalbenchError, match="the Zoobot encoder is a convnext_atto, the variant's model is "
                                            "timm:resnet18.*model = \"timm:convnext_atto\""):
        zoobot_backbone("convnext_atto", "timm:resnet18", 64, tmp_path)
    with pytest.raises(GalbenchError, match="Zoobot encoders are timm models; model 'alexnet-tiny' is not"):
        zoobot_backbone("convnext_atto", "alexnet-tiny", 64, tmp_path)
    greyscale = timm_state("convnext_atto", 0)
    greyscale["stem.0.weight"] = greyscale["stem.0.weight"][:, :1]  # a one-channel (greyscale) encoder
    write_hub_repo(hub_cache, "mwalmsley/zoobot-encoder-grey", zoobot_files(state=greyscale))
    with pytest.raises(GalbenchError, match="weights do not fit timm:convnext_atto"):
        zoobot_backbone("grey", "timm:convnext_atto", 64, tmp_path)


MODEL = "timm:mobilenetv3_small_050"


def test_pretrainings_work_for_a_timm_model_and_the_head_is_not_transferred(tmp_path):
    pytest.importorskip("timm", reason="timm models need the optional timm package")
    cpu = torch.device("cpu")
    # a small timm model with batch norms that galbench does not list: any timm name works
    fractal = pretrain_fractal(tmp_path / "fractal.pt", FractalParams(classes=4, per_class=20, size=32),
                               MODEL, epochs=1, lr=1e-3, batch_size=32, device=cpu)
    catalog = pretrain_on_catalog(make_catalog(n=80, size=32, classes=("a", "b", "c", "d")), tmp_path / "sim.pt",
                                  MODEL, 32, epochs=1, lr=1e-3, batch_size=32, device=cpu,
                                  source={"kind": "catalog"})
    for path in (fractal, catalog):
        pretrained = load_checkpoint(path)["state_dict"]
        assert pretrained["classifier.weight"].shape == (4, 1024)
        trainer = tiny_trainer(MODEL, tmp_path / path.stem, 32, finetune="head", init_state=pretrained)
        trainer.begin_session()
        trainer.train_one_epoch()
        final = trainer.model.state_dict()
        assert final["classifier.weight"].shape == (3, 1024)  # a new head for the 3 classes: the 4-class one stayed behind
        # the whole backbone, batch norms' running statistics included: frozen layers stay as pretrained
        assert_backbone_equal(final, pretrained, "classifier")
