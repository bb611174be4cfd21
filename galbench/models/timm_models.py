"""timm's models as galbench models: `timm:NAME` for any name timm knows, resolved when first used.

timm is an optional extra (`pip install 'galbench[timm]'`). Its models already follow galbench's interface
(`forward_features`, `forward_head(pre_logits=...)`, `num_features`); galbench adds `head_name`, the
classifier that timm's pretrained config names, and gives the input size to models that fix it at
construction (ViTs). A few recommended models are registered with measured facts, so that `galbench models`
lists them without importing timm or building anything.

Pretrained weights are read into timm's own layout by timm itself (`load_pretrained` with the state dict
passed in), so each architecture's checkpoint filter applies: a ViT's position embeddings are resampled to
the input size, for example. galbench reads the file (safetensors, or `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from functools import partial
from pathlib import Path

import torch
from torch import nn

from galbench.errors import GalbenchError
from galbench.models.hub import hub_file, repo_folder
from galbench.models.registry import TIMM_PREFIX, ModelFacts, register_model
from galbench.models.weights import read_weights_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def require_timm():
    """The timm module, or a one-line error saying how to install it."""
    try:
        import timm
    except ImportError:
        raise GalbenchError("timm models need the timm package", fix="pip install 'galbench[timm]'") from None
    return timm


def check_timm_name(name: str) -> None:
    """Raise a one-line GalbenchError unless timm knows `name` (an architecture, optionally `.tag`)."""
    timm = require_timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else \
            "python -c \"import timm; print(timm.list_models('*PART*'))\" lists timm's names"
        raise GalbenchError(f"timm has no model {name!r}", fix=hint)
    try:
        timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an architecture with a pretrained tag it does not have
        architecture = name.split(".", 1)[0]
        tags = ", ".join(timm.list_pretrained(architecture + ".*")[:6]) or "none"
        raise GalbenchError(f"timm has no pretrained tag {name!r}", fix=f"tags include {tags}") from None


def _fixes_input_size(name: str) -> bool:
    cfg = require_timm().models.get_pretrained_cfg(name)
    return bool(cfg and cfg.fixed_input_size)


def _create(name: str, num_classes: int, image_size: int | None, **kwargs) -> nn.Module:
    timm = require_timm()
    if image_size is not None and _fixes_input_size(name):
        kwargs["img_size"] = image_size
    try:
        return timm.create_model(name, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise GalbenchError(f"timm cannot build {name} for {image_size} px inputs ({str(exc).splitlines()[0][:100]})",
                            where=TIMM_PREFIX + name) from None


def _adapt(model: nn.Module, name: str, image_size: int | None) -> nn.Module:
    classifier = model.pretrained_cfg.get("classifier")
    if not isinstance(classifier, str):
        raise GalbenchError(f"timm:{name} has {'no' if classifier is None else 'several'} classifier heads; "
                            "galbench needs exactly one", fix="choose another timm model")
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if image_size is not None and patch is not None and image_size % patch[0]:
        raise GalbenchError(f"timm:{name} cuts images into {patch[0]} px patches; {image_size} px is not a multiple",
                            fix=f"use image_size = {image_size // patch[0] * patch[0] or patch[0]} or another model")
    model.head_name = classifier
    return model


def build_timm(name: str, num_classes: int, image_size: int | None) -> nn.Module:
    """A timm model (randomly initialised) with galbench's interface, for inputs of `image_size` pixels."""
    return _adapt(_create(name, num_classes, image_size), name, image_size)


@contextlib.contextmanager
def _quiet_timm():
    """timm logs the head it drops and the keys it adapts; galbench checks the result itself."""
    logger = logging.getLogger("timm")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def backbone_from_state(name: str, image_size: int | None, state: dict[str, torch.Tensor],
                        source: str) -> dict[str, torch.Tensor]:
    """The backbone weights (no head) of timm:`name` at `image_size`, from a state dict in timm's layout."""
    with torch.device("meta"):  # the names the weights must have; nothing is allocated
        needed = [key for key in _create(name, 0, image_size).state_dict() if not key.endswith("num_batches_tracked")]
    missing = [key for key in needed if key not in state]
    if missing:
        raise GalbenchError(f"weights lack {missing[0]!r} ({len(missing)} of {len(needed)} tensors missing)",
                            where=source, fix=f"pretrained weights must be timm:{name} weights in timm's layout")
    with _quiet_timm():
        try:
            model = _create(name, 0, image_size, pretrained=True, pretrained_cfg_overlay={"state_dict": dict(state)})
        except (RuntimeError, KeyError, ValueError) as exc:  # shapes that do not fit, another channel count
            detail = " ".join(str(exc).split())
            raise GalbenchError(f"weights do not fit timm:{name} ({detail[:160]})", where=source,
                                fix="pretrained weights must come from the same architecture") from None
    return _adapt(model, name, image_size).state_dict()


def imagenet_backbone(name: str, image_size: int | None, path: Path | None = None) -> dict[str, torch.Tensor]:
    """timm's default pretrained weights for `name` (ImageNet), from `path` or the Hugging Face hub cache."""
    if path is not None:
        return backbone_from_state(name, image_size, read_weights_file(path), str(path))
    cfg = require_timm().models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        raise GalbenchError(f"timm publishes no hub weights for {name}", where=TIMM_PREFIX + name,
                            fix="use init = \"imagenet:PATH\" with a weights file, or another model")
    repo, _, revision = cfg.hf_hub_id.partition("@")
    filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else WEIGHT_FILES
    found = hub_file(repo, filenames, revision or None)
    if found is None:
        url = f"https://huggingface.co/{repo}/resolve/{revision or 'main'}/{filenames[0]}"
        raise GalbenchError(
            f"ImageNet weights for timm:{name} are not cached and cannot be downloaded", where=str(repo_folder(repo)),
            fix=f"run `hf download {repo} {filenames[0]}` where there is a network and copy that folder here "
                f"(refs/ and snapshots/), or fetch {url} and use init = \"imagenet:PATH\"")
    return backbone_from_state(name, image_size, read_weights_file(found), str(found))


# Measured with tests/test_models_registry.py::test_registered_facts_are_measured (timm 1.0.31, torch 2.14.1).
RECOMMENDED = {
    "resnet18": ("ResNet-18, the standard small CNN; Zoobot weights: zoobot:resnet18",
                 ModelFacts(11176512, 512, 296094720, 3627125760)),
    "resnet50": ("ResNet-50, the standard transfer-learning CNN; Zoobot weights: zoobot:resnet50",
                 ModelFacts(23508032, 2048, 667299840, 8174284800)),
    "convnext_atto": ("ConvNeXt-Atto, the smallest ConvNeXt; Zoobot's ConvNeXts start at timm:convnext_nano",
                      ModelFacts(3374520, 320, 89310080, 1094026880)),
    "efficientnet_b0": ("EfficientNet-B0, mobile-sized; Zoobot weights: zoobot:efficientnet_b0 (Zoobot's pick)",
                        ModelFacts(4007548, 1280, 63940864, 769077184)),
    "vit_tiny_patch16_224": ("ViT-Tiny, 16 px patches: image_size must be a multiple of 16",
                             ModelFacts(5524416, 192, 187869312, 2506983552)),
}

for _name, (_description, _facts) in RECOMMENDED.items():
    register_model(TIMM_PREFIX + _name, _description, _facts)(partial(build_timm, _name))
