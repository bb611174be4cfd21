"""A variant's starting weights: none (scratch), ImageNet, Zoobot, a checkpoint file, or a pretraining made on demand."""

from __future__ import annotations

from pathlib import Path

import torch

from galbench.errors import GalbenchError
from galbench.experiment.suite import Suite, Variant
from galbench.fileio import relative_path
from galbench.models.registry import TIMM_PREFIX
from galbench.models.timm_models import imagenet_backbone
from galbench.models.weights import imagenet_state_dict, load_checkpoint
from galbench.models.zoobot import zoobot_backbone


def resolve_init(variant: Variant, suite: Suite, base: Path, device: torch.device,
                 display=None, replicate: int = 0) -> tuple[dict | None, dict]:
    """The initial weights of a variant (None for scratch) and what they cost to make (pretraining).

    `replicate` picks one of a pretraining's independent replicates (`replicates = K`). ImageNet and Zoobot
    weights cost nothing that galbench saw: their cost is {}.
    """
    kind, _, value = variant.init.partition(":")
    if kind == "scratch":
        return None, {}
    if kind == "imagenet":
        path = relative_path(value, base) if value else None
        if variant.model.startswith(TIMM_PREFIX):
            return imagenet_backbone(variant.model[len(TIMM_PREFIX):], suite.data.image_size, path), {}
        if variant.model != "alexnet":
            raise GalbenchError(f"variant {variant.name!r}: ImageNet weights fit only model 'alexnet' and timm "
                                f"models, not {variant.model!r}")
        return imagenet_state_dict(path), {}
    if kind == "zoobot":
        return zoobot_backbone(value, variant.model, suite.data.image_size, base), {}
    if kind == "checkpoint":
        checkpoint = load_checkpoint(relative_path(value, base))
        return checkpoint["state_dict"], checkpoint.get("meta", {}).get("pretrain_cost", {})
    from galbench.experiment import pretrain

    checkpoint_path = pretrain.ensure_for_variant(variant, suite, base, device, display, replicate)
    checkpoint = load_checkpoint(checkpoint_path)
    return checkpoint["state_dict"], checkpoint["meta"].get("pretrain_cost", {})
