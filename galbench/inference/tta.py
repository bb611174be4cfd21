"""Rotation averaging: the dihedral views of a batch, stacked into the batch dimension for one forward pass.

Galaxies have no up: a model's prediction should not depend on how the cutout is turned. Averaging the
probabilities over the 8 symmetries of the square (D4: 4 turns, with and without a mirror flip), or over
the 4 turns only, makes the prediction exactly invariant to those turns. The views are built with
transposes and flips only, which export to ONNX, so every backend averages the same way.
"""

from __future__ import annotations

import torch

VIEW_COUNTS = (1, 4, 8)


def _turn(images: torch.Tensor) -> torch.Tensor:
    """Turn by 90 degrees counter-clockwise (numpy.rot90 over the last two axes)."""
    return images.transpose(-2, -1).flip(-2)


def dihedral_views(images: torch.Tensor, views: int) -> torch.Tensor:
    """(N, C, H, W) -> (views * N, C, H, W): identity and turns (4), then the same after a mirror flip (8)."""
    if views not in VIEW_COUNTS:
        raise ValueError(f"views must be one of {VIEW_COUNTS}, not {views}")
    stack = [images]
    if views >= 4:
        for _ in range(3):
            stack.append(_turn(stack[-1]))
    if views == 8:
        mirrored = [view.flip(-1) for view in stack]
        stack += mirrored
    return torch.cat(stack) if views > 1 else images
