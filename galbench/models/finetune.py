"""Fine-tuning policies: which parameters train. Layer names are the model's own module names."""

from __future__ import annotations

from torch import nn

from galbench.errors import GalbenchError

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)  # timm's subclass these


def layer_names(model: nn.Module) -> list[str]:
    """Modules that own parameters, to two levels (`features.3`, `layer2.0`, `stages.1`), in order."""
    names: list[str] = []
    for name, _ in model.named_parameters():
        parts = name.split(".")[:-1]
        for depth in (1, 2):
            if len(parts) >= depth and ".".join(parts[:depth]) not in names:
                names.append(".".join(parts[:depth]))
    return names


def apply_finetune_policy(model: nn.Module, policy: str) -> None:
    """`all` trains every layer; `head` only the classifier head; `frozen:LAYER` freezes LAYER and all before it.

    "Before" is the order in which the model registers its parameters, which is the forward order for
    AlexNet and for timm's models (`frozen:layer2` for a ResNet, `frozen:stages.1` for a ConvNeXt,
    `frozen:blocks.5` for a ViT, whose position embedding and patch embedding come first). Frozen batch
    norms must also stay in eval mode while training: see `keep_frozen_norms_in_eval`.
    """
    if policy == "all":
        return
    parameters = list(model.named_parameters())
    head = model.head_name
    if policy == "head":
        for name, parameter in parameters:
            parameter.requires_grad_(_under(name, head))
        return
    if policy.startswith("frozen:"):
        layer = policy.split(":", 1)[1]
        inside = [i for i, (name, _) in enumerate(parameters) if _under(name, layer)]
        if not inside:
            raise GalbenchError(f"no layer {layer!r}", where="finetune",
                                fix=f"choose from {', '.join(layer_names(model))}")
        if any(_under(name, head) for name, _ in parameters[: inside[-1] + 1]):
            raise GalbenchError(f"frozen:{layer} would freeze the classifier head {head!r}", where="finetune")
        last_frozen = inside[-1]
    else:
        raise GalbenchError(f"unknown fine-tuning policy {policy!r}", fix="all, head or frozen:LAYER")
    for _, parameter in parameters[: last_frozen + 1]:
        parameter.requires_grad_(False)


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Put batch-norm layers whose parameters are all frozen in eval mode; call after every `model.train()`.

    A frozen layer should be the pretrained layer: in training mode a batch norm would still normalise
    with each batch's statistics and overwrite its running statistics, whatever `requires_grad` says.
    """
    for module in model.modules():
        if isinstance(module, BATCH_NORMS):
            parameters = list(module.parameters(recurse=False))
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()


def _under(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")
