"""Weight sources: galbench checkpoints, AlexNet's ImageNet weights, weight files, and loading a backbone."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from galbench.errors import GalbenchError

CHECKPOINT_FORMAT = "galbench-checkpoint-1"


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
        state = read_weights_file(path)
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


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, or else from a tensors-only pickle (`torch.load(weights_only=True)`)."""
    path = Path(path)
    if not path.is_file():
        raise GalbenchError("weights file not found", where=str(path))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - safetensors and pickle raise many types for truncated files
        raise GalbenchError(f"not a readable weights file, truncated or foreign? ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:80]})", where=str(path)) from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GalbenchError("not a state dict (a mapping of names to tensors)", where=str(path))
    return state


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every weight except the classifier head; shapes must match the model's."""
    own = model.state_dict()
    head = model.head_name + "."
    for key, value in own.items():
        if key.startswith(head):
            continue
        if key not in state:
            raise GalbenchError(f"weights lack {key!r}", where=source)
        if state[key].shape != value.shape:
            raise GalbenchError(f"{key} has shape {tuple(state[key].shape)}, the model needs {tuple(value.shape)}",
                                where=source, fix="pretrained weights must come from the same model variant")
    backbone = {k: v for k, v in state.items() if k in own and not k.startswith(head)}
    model.load_state_dict(backbone, strict=False)


