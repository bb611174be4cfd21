"""Model registry (AlexNet and narrower variants for the CPU), weight sources and fine-tuning policies.

All variants keep torchvision's AlexNet layout (`features`, `avgpool`, `classifier` with the same indices),
so ImageNet weights load by name into `alexnet`, and layer names such as `features.6` mean the same thing
in every variant.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from galbench.errors import GalbenchError

CHECKPOINT_FORMAT = "galbench-checkpoint-1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD = "classifier.6"


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


class AlexNet(nn.Module):
    """torchvision's AlexNet with scalable widths; the default widths give torchvision's model exactly."""

    def __init__(self, num_classes: int, channels=(64, 192, 384, 256, 256), hidden: int = 4096,
                 dropout: float = 0.5):
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(c5 * 36, hidden), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model("alexnet", "torchvision AlexNet (61M parameters at 1000 classes), the paper's model; 224 px")
def _alexnet(num_classes: int) -> nn.Module:
    return AlexNet(num_classes)


@register_model("alexnet-half", "AlexNet at half width (conv 32-96-192-128-128, hidden 2048)")
def _alexnet_half(num_classes: int) -> nn.Module:
    return AlexNet(num_classes, (32, 96, 192, 128, 128), 2048)


@register_model("alexnet-small", "AlexNet at quarter width, hidden 256: CPU-sized, 64 px inputs")
def _alexnet_small(num_classes: int) -> nn.Module:
    return AlexNet(num_classes, (16, 48, 96, 64, 64), 256)


@register_model("alexnet-tiny", "AlexNet at 1/8 width, hidden 64: for tests and smoke runs")
def _alexnet_tiny(num_classes: int) -> nn.Module:
    return AlexNet(num_classes, (8, 24, 48, 32, 32), 64, dropout=0.2)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


# --- weight sources -----------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a galbench checkpoint (tensors and plain data only) and check its format."""
    path = Path(path)
    if not path.exists():
        raise GalbenchError("checkpoint not found", where=str(path))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for truncated or foreign files
        raise GalbenchError(f"not a readable checkpoint, truncated or foreign? ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:80]})", where=str(path)) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise GalbenchError("not a galbench checkpoint", where=str(path),
                            fix="checkpoints come from galbench run or galbench pretrain")
    return checkpoint


def imagenet_state_dict(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """torchvision's AlexNet_Weights.IMAGENET1K_V1, from `path` or through torch's own hub cache."""
    from torchvision.models import AlexNet_Weights

    weights = AlexNet_Weights.IMAGENET1K_V1
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise GalbenchError("ImageNet weights file not found", where=str(path))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise GalbenchError(f"cannot read ImageNet weights ({type(exc).__name__})", where=str(path)) from None
    else:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - offline: URLError, socket errors, hash mismatch
            raise GalbenchError(
                f"ImageNet AlexNet weights are not cached and cannot be downloaded ({type(exc).__name__})",
                where=str(cached), fix=f"put {Path(weights.url).name} from {weights.url} there, "
                                       "or use init = \"imagenet:PATH\"") from None
    if not isinstance(state, dict) or "features.0.weight" not in state:
        raise GalbenchError("not a torchvision AlexNet state dict", where=str(path or "torch hub cache"))
    return state


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every weight except the classifier head; shapes must match the model's."""
    own = model.state_dict()
    for key, value in own.items():
        if key.startswith(HEAD + "."):
            continue
        if key not in state:
            raise GalbenchError(f"weights lack {key!r}", where=source)
        if state[key].shape != value.shape:
            raise GalbenchError(f"{key} has shape {tuple(state[key].shape)}, the model needs {tuple(value.shape)}",
                                where=source, fix="pretrained weights must come from the same model variant")
    backbone = {k: v for k, v in state.items() if k in own and not k.startswith(HEAD + ".")}
    model.load_state_dict(backbone, strict=False)


def apply_finetune_policy(model: nn.Module, policy: str) -> None:
    """`all` trains every layer; `head` only the last classifier layer; `frozen:LAYER` freezes up to LAYER."""
    names = [name for name, _ in model.named_modules() if name.count(".") == 1]
    if policy == "all":
        return
    if policy == "head":
        cutoff = names.index(HEAD) - 1
    elif policy.startswith("frozen:"):
        layer = policy.split(":", 1)[1]
        if layer not in names:
            raise GalbenchError(f"no layer {layer!r}", where="finetune", fix=f"choose from {', '.join(names)}")
        cutoff = names.index(layer)
    else:
        raise GalbenchError(f"unknown fine-tuning policy {policy!r}", fix="all, head or frozen:LAYER")
    frozen = set(names[: cutoff + 1])
    for name, parameter in model.named_parameters():
        if ".".join(name.split(".")[:2]) in frozen:
            parameter.requires_grad_(False)
