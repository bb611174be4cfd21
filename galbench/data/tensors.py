"""From a catalog to training tensors: class mapping, stratified split, resize, device-side augmentation.

A split is held as one uint8 tensor on the training device and augmented there, so the training loop has
no per-sample Python work and needs no DataLoader workers. A split larger than the memory budget stays in
the memory-mapped FITS file and is streamed in chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from galbench.data.catalog import Catalog
from galbench.errors import GalbenchError
from galbench.models.registry import IMAGENET_MEAN, IMAGENET_STD

PREPARE_CHUNK = 512


def map_classes(catalog: Catalog, mapping: dict[str, list[int | str]] | None,
                ttype_bins: dict[str, tuple[float, float]] | None = None) -> tuple[list[str], np.ndarray]:
    """Target class names and a label per catalog row (-1 where the row's class is not mapped).

    `mapping` regroups the catalog's classes; `ttype_bins` makes classes from a `ttype` column instead.
    """
    if ttype_bins is not None:
        from galbench.data.sdss import labels_from_ttype

        if "ttype" not in catalog.table.colnames:
            raise GalbenchError("data.ttype_bins needs a 'ttype' column in the catalog", where=str(catalog.path))
        classes, labels = labels_from_ttype(catalog.table["ttype"], ttype_bins)
        return classes, labels.astype(np.int64)
    labels = catalog.labels
    if mapping is None:
        return list(catalog.classes), labels
    source_index = {name: index for index, name in enumerate(catalog.classes)}
    target = np.full(len(labels), -1, dtype=np.int64)
    for new_label, (name, sources) in enumerate(mapping.items()):
        for source in sources:
            if isinstance(source, str):
                if source not in source_index:
                    raise GalbenchError(f"class mapping {name!r}: the catalog has no class {source!r}",
                                        where="data.classes", fix=f"catalog classes: {', '.join(catalog.classes)}")
                source = source_index[source]
            if not 0 <= source < len(catalog.classes):
                raise GalbenchError(f"class mapping {name!r}: label {source} is outside the catalog's "
                                    f"{len(catalog.classes)} classes", where="data.classes")
            target[labels == source] = new_label
    return list(mapping), target


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float],
                     seed: int | list[int]) -> dict[str, np.ndarray]:
    """Row indices of train/val/test, stratified by label; rows labelled -1 are left out.

    `seed` is an int or a list of ints (numpy's SeedSequence entropy), e.g. [split seed, run seed].
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels[labels >= 0]):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(fractions[1] * rows.size))
        n_test = int(round(fractions[2] * rows.size))
        parts["val"].append(rows[:n_val])
        parts["test"].append(rows[n_val:n_val + n_test])
        parts["train"].append(rows[n_val + n_test:])
    split = {name: np.sort(np.concatenate(chunks)) if chunks else np.empty(0, int) for name, chunks in parts.items()}
    for name, rows in split.items():
        if rows.size == 0:
            raise GalbenchError(f"the {name} split is empty", where="data.split",
                                fix="use a larger catalog or larger fractions")
    return split


def nested_order(labels: np.ndarray, length: int, seed: list[int]) -> np.ndarray:
    """`length` positions whose every prefix is a stratified sample: the first n make a size-n subset.

    Which class fills the h-th place follows Balinski and Young's quota method (1975): among the
    classes still under their upper quota ceil(h n_c / N), the one with the largest n_c / (a_c + 1),
    a_c being its places so far (ties in a random class order). That keeps every prefix within one
    galaxy of proportional for every class (both quotas) while each prefix contains the shorter ones,
    so subsets of growing size are nested. Within a class, galaxies come in a random order.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    members = [rng.permutation(np.flatnonzero(labels == label)) for label in classes]
    ties = rng.permutation(classes.size)
    taken = np.zeros(classes.size, dtype=np.int64)
    order = np.empty(length, dtype=np.int64)
    for place in range(length):
        upper = -(-(place + 1) * counts // labels.size)
        priority = np.where(taken < upper, counts / (taken + 1), -1.0)
        best = np.flatnonzero(priority == priority.max())
        chosen = best[np.argmin(ties[best])]
        order[place] = members[chosen][taken[chosen]]
        taken[chosen] += 1
    return order


def train_subset(labels: np.ndarray, size: int | str, per_class: bool, seed: list[int]) -> np.ndarray:
    """Positions (into the training split) of a stratified subset: `size` galaxies in total, or per class.

    Subsets drawn with the same seed are nested: a smaller one lies inside every larger one.
    """
    if size == "all":
        return np.arange(labels.size)
    if per_class:
        counts = np.bincount(labels)
        present = np.flatnonzero(counts)
        if size > counts[present].min():
            smallest = present[counts[present].argmin()]
            raise GalbenchError(f"train size {size} per class is more than the training split holds of class "
                                f"{smallest} ({counts[smallest]} galaxies)", where="suite.train_sizes",
                                fix="use smaller sizes, or \"all\"")
        rng = np.random.default_rng(seed)
        return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == label))[:size] for label in present]))
    if size > labels.size:
        raise GalbenchError(f"train size {size} is more than the training split holds ({labels.size} galaxies)",
                            where="suite.train_sizes", fix="use smaller sizes, or \"all\"")
    return np.sort(nested_order(labels, size, seed))


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Cross-entropy weights N / (K n_c) over the K classes present (sklearn's "balanced"); 0 for absent ones."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    present = counts > 0
    return np.divide(labels.size, present.sum() * counts, out=np.zeros(n_classes), where=present)


def balanced_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One epoch of positions drawn with replacement so that every class is drawn equally often on average."""
    counts = torch.bincount(labels.cpu())
    weights = 1.0 / counts[labels.cpu()].double()
    return torch.multinomial(weights, labels.numel(), replacement=True, generator=generator)


def prepare_images(images: np.ndarray, crop: float, size: int) -> torch.Tensor:
    """Centre-crop (fraction of the side) and resize a uint8 (N, 3, H, W) array to a uint8 tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    height, width = tensor.shape[-2:]
    if crop < 1.0:
        ch, cw = max(1, round(height * crop)), max(1, round(width * crop))
        top, left = (height - ch) // 2, (width - cw) // 2
        tensor = tensor[..., top:top + ch, left:left + cw]
    if tuple(tensor.shape[-2:]) != (size, size):
        resized = F.interpolate(tensor.float(), size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False)
        tensor = resized.round_().clamp_(0, 255).to(torch.uint8)
    return tensor.contiguous()


@dataclass
class SplitImages:
    """One split's images and labels: on the device when they fit the budget, else streamed from the file."""

    source: np.ndarray  # (N_all, 3, H, W) uint8, possibly a memory map
    rows: np.ndarray
    labels: torch.Tensor  # on device
    crop: float
    size: int
    device: torch.device
    resident: torch.Tensor | None = None  # (N, 3, size, size) uint8 on device
    catalog_rows: np.ndarray | None = None  # each image's row in the catalog, where `source` is not the catalog

    @classmethod
    def build(cls, source: np.ndarray, rows: np.ndarray, labels: np.ndarray, crop: float, size: int,
              device: torch.device, budget_bytes: int, catalog_rows: np.ndarray | None = None) -> SplitImages:
        """Prepare a split; load it onto the device whole if it fits `budget_bytes`."""
        split = cls(source, rows, torch.as_tensor(labels[rows], device=device), crop, size, device,
                    catalog_rows=catalog_rows)
        if rows.size * 3 * size * size <= budget_bytes:
            split.resident = split.all_images()
        return split

    def __len__(self) -> int:
        return int(self.rows.size)

    @property
    def rows_in_catalog(self) -> np.ndarray:
        """The catalog row of each image, in split order."""
        return self.rows if self.catalog_rows is None else self.catalog_rows

    def subset(self, positions: np.ndarray) -> SplitImages:
        """The images at `positions` of this split (prepared images are indexed, not prepared again)."""
        index = torch.as_tensor(positions, device=self.device)
        resident = self.resident[index] if self.resident is not None else None
        return SplitImages(self.source, self.rows[positions], self.labels[index], self.crop, self.size, self.device,
                           resident, None if self.catalog_rows is None else self.catalog_rows[positions])

    def all_images(self) -> torch.Tensor:
        """The whole split as one prepared uint8 tensor (what a remote worker is sent)."""
        if self.resident is not None:
            return self.resident
        return torch.cat([self._prepare(self.rows[i:i + PREPARE_CHUNK]) for i in range(0, len(self), PREPARE_CHUNK)])

    def _prepare(self, rows: np.ndarray) -> torch.Tensor:
        return prepare_images(self.source[rows], self.crop, self.size).to(self.device, non_blocking=True)

    def batches(self, batch_size: int, order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (uint8 images, labels) batches in `order` (positions within the split; default: in order)."""
        order = torch.arange(len(self)) if order is None else order.cpu()
        if self.resident is not None:
            order = order.to(self.device)
            for start in range(0, len(self), batch_size):
                index = order[start:start + batch_size]
                yield self.resident[index], self.labels[index]
            return
        # Streaming: take a chunk of the (shuffled) order, read those rows in file order, then batch it.
        chunk = max(batch_size, PREPARE_CHUNK // batch_size * batch_size)
        for start in range(0, len(self), chunk):
            positions = order[start:start + chunk].numpy()
            file_order = np.argsort(self.rows[positions], kind="stable")
            images = self._prepare(self.rows[positions][file_order])
            inverse = torch.as_tensor(np.argsort(file_order), device=self.device)
            images = images[inverse]
            labels = self.labels[torch.as_tensor(positions, device=self.device)]
            for offset in range(0, positions.size, batch_size):
                yield images[offset:offset + batch_size], labels[offset:offset + batch_size]


def augment(images: torch.Tensor, generator: torch.Generator, flips: bool, rot90: bool, shift: int) -> torch.Tensor:
    """Random dihedral transforms (flips, 90-degree turns) and small shifts, per sample, on the device.

    Every one of these moves pixels without changing them, so the composition is one index map per sample
    and the whole batch is transformed by a single gather (edges are replicated where a shift uncovers them).
    """
    batch, channels, height, width = images.shape
    if not (flips or rot90 or shift):
        return images
    device = images.device
    draws = torch.rand((batch, 3), generator=generator, device=generator.device).to(device) < 0.5
    turn = draws[:, 0] & rot90 & (height == width)  # a transpose plus the flips reach all 8 symmetries
    flip_x, flip_y = draws[:, 1] & (flips or rot90), draws[:, 2] & (flips or rot90)
    offsets = torch.randint(0, 2 * shift + 1, (batch, 2), generator=generator, device=generator.device).to(device) \
        - shift if shift else torch.zeros((batch, 2), dtype=torch.long, device=device)
    # shifts and flips act on rows and columns separately: build them as (B, H) and (B, W) vectors
    a = (torch.arange(height, device=device) + offsets[:, :1]).clamp(0, height - 1)
    b = (torch.arange(width, device=device) + offsets[:, 1:]).clamp(0, width - 1)
    a = torch.where(flip_y.view(-1, 1), height - 1 - a, a)
    b = torch.where(flip_x.view(-1, 1), width - 1 - b, b)
    # a transpose swaps which of the two picks the source row: flat index = row * width + column
    row_weight = torch.where(turn, 1, width).view(-1, 1, 1)
    col_weight = torch.where(turn, width, 1).view(-1, 1, 1)
    index = (a.view(batch, height, 1) * row_weight + b.view(batch, 1, width) * col_weight)
    index = index.view(batch, 1, height * width).expand(batch, channels, -1)
    return images.reshape(batch, channels, height * width).gather(2, index).view(batch, channels, height, width)


class Normalizer(torch.nn.Module):
    """uint8 (N, 3, H, W) -> float, scaled to [0, 1] and standardised with the ImageNet statistics."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std
