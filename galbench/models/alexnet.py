"""AlexNet (torchvision's layout) and narrower variants for the CPU.

All variants keep torchvision's AlexNet layout (`features`, `avgpool`, `classifier` with the same indices),
so ImageNet weights load by name into `alexnet`, and layer names such as `features.6` mean the same thing
in every variant.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from galbench.errors import GalbenchError
from galbench.models.registry import ModelFacts, register_model

MIN_IMAGE_SIZE = 63  # below this the third max-pool has nothing left to pool


class FixedAdaptivePool(nn.Module):
    """AdaptiveAvgPool2d for one known input size, as one matrix product (exportable for any size).

    `weights` (out, in) averages along one axis; the product over both axes, kron(weights, weights), maps
    each channel's flattened in x in pixels to its out x out pooled ones in a single 2-D product."""

    def __init__(self, in_size: int, out_size: int):
        super().__init__()
        weights = torch.zeros(out_size, in_size)
        for i in range(out_size):
            start, end = (i * in_size) // out_size, math.ceil((i + 1) * in_size / out_size)
            weights[i, start:end] = 1.0 / (end - start)
        self.out_size = out_size
        self.register_buffer("weights", weights)
        self.register_buffer("spread", torch.kron(weights, weights).t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x.flatten(2), self.spread).unflatten(2, (self.out_size, self.out_size))


class AlexNet(nn.Module):
    """torchvision's AlexNet with scalable widths; the default widths give torchvision's model exactly."""

    head_name = "classifier.6"

    def __init__(self, num_classes: int, channels=(64, 192, 384, 256, 256), hidden: int = 4096,
                 dropout: float = 0.5, batch_norm: bool = False):
        super().__init__()
        c1, c2, c3, c4, c5 = channels

        def conv(inputs: int, outputs: int, **shape) -> list[nn.Module]:
            # with batch norm (as VGG-BN): the norm follows the convolution, whose bias it makes redundant
            if not batch_norm:
                return [nn.Conv2d(inputs, outputs, **shape), nn.ReLU(inplace=True)]
            return [nn.Conv2d(inputs, outputs, bias=False, **shape), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(3, c1, kernel_size=11, stride=4, padding=2), nn.MaxPool2d(kernel_size=3, stride=2),
            *conv(c1, c2, kernel_size=5, padding=2), nn.MaxPool2d(kernel_size=3, stride=2),
            *conv(c2, c3, kernel_size=3, padding=1),
            *conv(c3, c4, kernel_size=3, padding=1),
            *conv(c4, c5, kernel_size=3, padding=1), nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(c5 * 36, hidden), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

        self.num_features = hidden

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def prepare_for_export(self, image_size: int) -> None:
        """ONNX exports AdaptiveAvgPool2d only where the input side divides evenly: use fixed weights.

        Where the feature map is at most 6 pixels on a side (inputs under 224 px), the pool only averages or
        repeats pixels, a linear map that folds into the first linear layer: that layer then reads the
        feature map directly (64 px: 36 times fewer multiplications in the largest layer, and no pool).
        The function computed is unchanged up to float rounding (tests compare with the trained model), but
        `classifier.1` then has other weights: this is for export only, never before loading a state dict.

        The feature map's side is found by a forward pass in evaluation mode: in training mode the pass
        would move batch norms' running statistics (the pass that sizes the pool must change no weight)."""
        training = self.training
        self.eval()
        try:
            with torch.no_grad():
                features = self.features(torch.zeros(1, 3, image_size, image_size))
        finally:
            self.train(training)
        channels, side = features.shape[1], features.shape[-1]
        pool = FixedAdaptivePool(side, 6)
        first = self.classifier[1]
        if side > 6 or not isinstance(first, nn.Linear) or first.in_features != channels * 36:  # or folded already
            self.avgpool = pool
            return
        # flatten(pool(x))[c*36 + 6i + j] = sum_hw P[i, h] P[j, w] x[c, h, w] = (x[c] flattened) @ kron(P, P).T
        spread = pool.spread.t()  # (36, side * side)
        folded = nn.Linear(channels * side * side, first.out_features, bias=first.bias is not None)
        with torch.no_grad():
            weight = first.weight.reshape(first.out_features, channels, 36) @ spread
            folded.weight.copy_(weight.reshape(first.out_features, -1))
            if first.bias is not None:
                folded.bias.copy_(first.bias)
        folded.train(first.training)
        self.avgpool = nn.Identity()
        self.classifier[1] = folded


def _checked(image_size: int | None) -> None:
    if image_size is not None and image_size < MIN_IMAGE_SIZE:
        raise GalbenchError(f"AlexNet needs inputs of at least {MIN_IMAGE_SIZE} px, got {image_size}",
                            fix="use image_size = 64 or more, or a timm model")


@register_model("alexnet", "torchvision AlexNet, the paper's model; 224 px",
                ModelFacts(57003840, 4096, 188122496, 1420209536))
def _alexnet(num_classes: int, image_size: int | None) -> nn.Module:
    _checked(image_size)
    return AlexNet(num_classes)


@register_model("alexnet-half", "AlexNet at half width (conv 32-96-192-128-128, hidden 2048)",
                ModelFacts(14259104, 2048, 49650368, 390196928))
def _alexnet_half(num_classes: int, image_size: int | None) -> nn.Module:
    _checked(image_size)
    return AlexNet(num_classes, (32, 96, 192, 128, 128), 2048)


@register_model("alexnet-small", "AlexNet at quarter width, hidden 256: CPU-sized, 64 px inputs",
                ModelFacts(814800, 256, 8212832, 109611872))
def _alexnet_small(num_classes: int, image_size: int | None) -> nn.Module:
    _checked(image_size)
    return AlexNet(num_classes, (16, 48, 96, 64, 64), 256)


@register_model("alexnet-small-bn", "alexnet-small with batch norm after each convolution (the GZ1 recipe); "
                "its features.N indices differ from alexnet-small's", ModelFacts(815088, 256, 8212832, 109611872))
def _alexnet_small_bn(num_classes: int, image_size: int | None) -> nn.Module:
    _checked(image_size)
    return AlexNet(num_classes, (16, 48, 96, 64, 64), 256, batch_norm=True)


@register_model("alexnet-tiny", "AlexNet at 1/8 width, hidden 64: for tests and smoke runs",
                ModelFacts(119208, 64, 2534576, 36015536))
def _alexnet_tiny(num_classes: int, image_size: int | None) -> nn.Module:
    _checked(image_size)
    return AlexNet(num_classes, (8, 24, 48, 32, 32), 64, dropout=0.2)
