"""The model registry: names to builders, in timm's shape (`register_model`, `list_models("alexnet*")`).

Every galbench model follows one interface, timm's own, so that training, fine-tuning policies,
embeddings, self-supervised heads and export treat every architecture alike:

- `forward_features(x)`: the backbone's output (a feature map or tokens);
- `forward_head(features, pre_logits=False)`: logits, or with `pre_logits=True` the embedding vector
  (the penultimate layer) of size `num_features`;
- `forward(x) == forward_head(forward_features(x))`;
- `head_name`: the qualified name of the final classifier layer (its weights are never transferred
  between tasks, and `finetune = "head"` trains only it);
- optionally `prepare_for_export(image_size)`: replace anything ONNX cannot export at that input size.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from galbench.errors import GalbenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it and what it is."""

    name: str
    builder: Callable[[int], nn.Module]
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str):
    """Decorator: add a builder `f(num_classes) -> nn.Module` to the registry under `name`."""

    def decorate(builder: Callable[[int], nn.Module]):
        _REGISTRY[name] = ModelEntry(name, builder, description)
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[ModelEntry]:
    """Registered models whose name matches a glob pattern, e.g. `alexnet*`."""
    return [entry for name, entry in sorted(_REGISTRY.items()) if fnmatch.fnmatch(name, pattern)]


def build_model(name: str, num_classes: int) -> nn.Module:
    """Build a registered model with a classifier head for `num_classes` classes."""
    if name not in _REGISTRY:
        raise GalbenchError(f"unknown model {name!r}", fix=f"choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name].builder(num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The embedding (penultimate-layer vector) of normalised images: what a linear probe or k-NN sees."""
    return model.forward_head(model.forward_features(images), pre_logits=True)
