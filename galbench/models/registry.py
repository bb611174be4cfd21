"""The model registry: names to builders, in timm's shape (`register_model`, `list_models("alexnet*")`).

Every galbench model follows one interface, timm's own, so that training, fine-tuning policies,
embeddings, self-supervised heads and export treat every architecture alike:

- `forward_features(x)`: the backbone's output (a feature map or tokens);
- `forward_head(features, pre_logits=False)`: logits, or with `pre_logits=True` the embedding vector
  (the penultimate layer) of size `embedding_size(model)` (`num_features` for AlexNet and most timm models);
- `forward(x) == forward_head(forward_features(x))`;
- `head_name`: the qualified name of the final classifier layer (its weights are never transferred
  between tasks, and `finetune = "head"` trains only it);
- optionally `prepare_for_export(image_size)`: replace anything ONNX cannot export at that input size.

Names are galbench's own (`alexnet-small`) or `timm:NAME` for any model timm knows
(galbench/models/timm_models.py), resolved lazily so that listing and validating names stays cheap.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from galbench.errors import GalbenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class ModelFacts:
    """What a model costs, measured once (tests/test_models_registry.py re-measures and compares).

    `backbone_parameters` excludes the classifier head, whose size depends on the number of classes,
    and is counted at 224 px (a ViT's position embedding grows with the input); FLOPs are torch's
    FlopCounterMode count of one image's forward pass with a 3-class head.
    """

    backbone_parameters: int
    embedding_size: int
    forward_flops_64px: int
    forward_flops_224px: int

    def parameters(self, num_classes: int) -> int:
        """Parameters with a linear head for `num_classes` classes."""
        return self.backbone_parameters + (self.embedding_size + 1) * num_classes


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it and what it is."""

    name: str
    builder: Callable[[int, int | None], nn.Module]
    description: str
    facts: ModelFacts


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str, facts: ModelFacts):
    """Decorator: add a builder `f(num_classes, image_size) -> nn.Module` to the registry under `name`."""

    def decorate(builder: Callable[[int, int | None], nn.Module]):
        _REGISTRY[name] = ModelEntry(name, builder, description, facts)
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[ModelEntry]:
    """Registered models whose name matches a glob pattern, e.g. `alexnet*` or `timm:*`."""
    return [entry for name, entry in sorted(_REGISTRY.items()) if fnmatch.fnmatch(name, pattern)]


def model_rows(pattern: str = "*") -> list[dict]:
    """The registered models matching `pattern` with their measured facts, as plain rows (for listings)."""
    rows = [{"name": entry.name, "source": "timm" if entry.name.startswith(TIMM_PREFIX) else "galbench",
             "description": entry.description, **asdict(entry.facts)} for entry in list_models(pattern)]
    if not rows:
        raise GalbenchError(f"no registered model matches {pattern!r}",
                            fix="galbench models lists them all; any timm model works as timm:NAME")
    return rows


def check_model_name(name: str) -> None:
    """Raise a one-line GalbenchError unless `name` can be built; builds nothing (suite validation calls it)."""
    if name.startswith(TIMM_PREFIX):
        from galbench.models.timm_models import check_timm_name

        check_timm_name(name[len(TIMM_PREFIX):])
    elif name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise GalbenchError(f"unknown model {name!r}",
                            fix=f"{hint}galbench models lists them; any timm model works as timm:NAME")


def build_model(name: str, num_classes: int, image_size: int | None = None) -> nn.Module:
    """Build a model with a classifier head for `num_classes` classes, for inputs of `image_size` pixels.

    `image_size` matters to models that fix their input size at construction (ViTs); None means the
    model's default.
    """
    check_model_name(name)
    if name in _REGISTRY:
        return _REGISTRY[name].builder(num_classes, image_size)
    from galbench.models.timm_models import build_timm

    return build_timm(name[len(TIMM_PREFIX):], num_classes, image_size)


def embedding_size(model: nn.Module) -> int:
    """Length of the embedding vector (`forward_head(..., pre_logits=True)`).

    timm models whose head has a hidden layer (MobileNetV3) say so in `head_hidden_size`.
    """
    return getattr(model, "head_hidden_size", None) or model.num_features


def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The embedding (penultimate-layer vector) of normalised images: what a linear probe or k-NN sees."""
    return model.forward_head(model.forward_features(images), pre_logits=True)
