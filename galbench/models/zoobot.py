"""Zoobot's galaxy-pretrained encoders (Walmsley et al.) as starting weights for timm models.

Zoobot publishes each encoder as a timm model on the Hugging Face hub, `mwalmsley/zoobot-encoder-NAME`, where
NAME is the timm architecture (Zoobot's documentation lists convnext_nano, convnext_small, convnext_base,
convnext_large, efficientnet_b0, tf_efficientnetv2_s, resnet18, resnet50, maxvit_rmlp_small_rw_224,
maxvit_large_tf_224): a `config.json` whose `architecture` names it, and the weights (`pytorch_model.bin`, or
`model.safetensors`) without a classifier head.

A variant pairs `model = "timm:NAME"` with `init = "zoobot:NAME"`, which reads the encoder from the hub cache
(downloading only when online); `init = "zoobot:PATH"` reads a folder holding those files, or a weights file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from galbench.errors import GalbenchError
from galbench.fileio import relative_path
from galbench.models.hub import hub_file, repo_folder
from galbench.models.registry import TIMM_PREFIX
from galbench.models.timm_models import WEIGHT_FILES, backbone_from_state
from galbench.models.weights import read_weights_file

REPOSITORY = "mwalmsley/zoobot-encoder-{}"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def zoobot_backbone(value: str, model: str, image_size: int | None, base: Path) -> dict[str, torch.Tensor]:
    """The backbone weights of a Zoobot encoder (hub name or local path) for timm model `model`."""
    if not model.startswith(TIMM_PREFIX):
        raise GalbenchError(f"Zoobot encoders are timm models; model {model!r} is not",
                            fix="e.g. model = \"timm:efficientnet_b0\" with init = \"zoobot:efficientnet_b0\"")
    path = relative_path(value, base)
    if path.exists() or "/" in value or "\\" in value or path.suffix in WEIGHT_SUFFIXES:
        weights, config = _local_files(path)
    else:
        repo = REPOSITORY.format(value)
        weights = hub_file(repo, WEIGHT_FILES)
        if weights is None:
            raise GalbenchError(
                f"Zoobot encoder {value!r} is not cached and cannot be downloaded", where=str(repo_folder(repo)),
                fix=f"run `hf download {repo}` where there is a network and copy that folder here, "
                    f"or fetch https://huggingface.co/{repo} and use init = \"zoobot:PATH\"")
        config = hub_file(repo, ("config.json",))
    architecture = model[len(TIMM_PREFIX):]
    if config is not None:
        published = _architecture(config)
        if published != architecture.split(".", 1)[0]:
            raise GalbenchError(f"the Zoobot encoder is a {published}, the variant's model is {model}",
                                where=str(config), fix=f"use model = \"{TIMM_PREFIX}{published}\"")
    return backbone_from_state(architecture, image_size, read_weights_file(weights), str(weights))


def _local_files(path: Path) -> tuple[Path, Path | None]:
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise GalbenchError("Zoobot weights not found", where=str(path),
                            fix="give a folder with config.json and pytorch_model.bin, or a weights file")
    weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise GalbenchError(f"the folder holds none of {', '.join(WEIGHT_FILES)}", where=str(path))
    config = path / "config.json"
    return weights, config if config.is_file() else None


def _architecture(config: Path) -> str:
    try:
        architecture = json.loads(config.read_text())["architecture"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GalbenchError(f"not a timm config.json with an 'architecture' ({type(exc).__name__})",
                            where=str(config)) from None
    if not isinstance(architecture, str):
        raise GalbenchError("'architecture' is not a name", where=str(config))
    return architecture
