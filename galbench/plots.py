"""matplotlib figures: montages of catalogs and the report's plots. Each returns PNG bytes or writes a file."""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from galbench.catalog import Catalog  # noqa: E402
from galbench.fileio import atomic_path  # noqa: E402


def figure_png(fig) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def save_png(png: bytes, path: str | os.PathLike) -> None:
    """Write PNG bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)


def montage(catalog: Catalog, per_class: int = 8, seed: int = 0) -> bytes:
    """A grid of example images: one row per class (and one for unlabelled rows, if any)."""
    labels = catalog.labels
    rows = [(name, np.flatnonzero(labels == index)) for index, name in enumerate(catalog.classes)]
    if (labels < 0).any():
        rows.append(("unknown", np.flatnonzero(labels < 0)))
    rows = [(name, idx) for name, idx in rows if idx.size]
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(rows), per_class, figsize=(1.3 * per_class, 1.45 * len(rows)), squeeze=False)
    for r, (name, indices) in enumerate(rows):
        chosen = np.sort(rng.choice(indices, size=min(per_class, indices.size), replace=False))
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < chosen.size:
                ax.imshow(np.asarray(catalog.images[chosen[c]]).transpose(1, 2, 0), interpolation="nearest")
            if c == 0:
                ax.set_ylabel(f"{name}\n(n={indices.size})", fontsize=8)
    fig.suptitle(f"{catalog.source or catalog.path}", fontsize=7)
    fig.subplots_adjust(wspace=0.04, hspace=0.1)
    return figure_png(fig)
