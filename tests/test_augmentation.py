"""Device-side augmentation: only the symmetries galaxies have (no up), and small shifts."""

from __future__ import annotations

import torch

from galbench.data.tensors import augment, prepare_images, stratified_split


def _symmetries(image):
    flips = [image, image.flip(-1), image.flip(-2), image.flip(-1).flip(-2)]
    return flips + [f.transpose(-1, -2) for f in flips]


def test_flips_and_turns_reach_all_eight_symmetries_and_nothing_else():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).view(2, 3, 6, 6)
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(80):
        out = augment(images, generator, flips=True, rot90=True, shift=0)
        for k in range(2):
            matches = [i for i, s in enumerate(_symmetries(images[k])) if torch.equal(out[k], s)]
            assert matches, "augmentation produced something that is not a symmetry of the square"
            seen.add(matches[0])
    assert seen == set(range(8))


def test_shift_moves_by_at_most_the_limit_and_replicates_edges():
    images = torch.arange(36, dtype=torch.uint8).view(1, 1, 6, 6).repeat(50, 3, 1, 1)
    out = augment(images, torch.Generator().manual_seed(1), flips=False, rot90=False, shift=1)
    for k in range(50):
        found = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                rows = (torch.arange(6) + dy).clamp(0, 5)
                cols = (torch.arange(6) + dx).clamp(0, 5)
                found |= torch.equal(out[k, 0], images[k, 0][rows][:, cols])
        assert found
    assert len({out[k, 0].sum().item() for k in range(50)}) > 3  # shifts vary per sample


def test_no_augmentation_is_the_identity():
    images = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(augment(images, torch.Generator(), False, False, 0), images)


def test_centre_crop_and_resize():
    images = torch.zeros(1, 3, 100, 100, dtype=torch.uint8)
    images[:, :, 25:75, 25:75] = 200
    out = prepare_images(images.numpy(), 0.5, 64)
    assert out.shape == (1, 3, 64, 64) and out.dtype == torch.uint8 and (out == 200).all()


def test_stratified_split_keeps_class_shares_and_skips_unknown():
    import numpy as np

    labels = np.array([0] * 70 + [1] * 30 + [-1] * 5)
    split = stratified_split(labels, (0.6, 0.2, 0.2), seed=0)
    assert sorted(np.concatenate(list(split.values()))) == list(range(100))
    assert (labels[split["val"]] == 0).sum() == 14 and (labels[split["val"]] == 1).sum() == 6
    assert stratified_split(labels, (0.6, 0.2, 0.2), seed=0)["train"].tolist() == split["train"].tolist()
