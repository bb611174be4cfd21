"""matplotlib figures: montages of catalogs and the report's plots. Each returns PNG bytes or writes a file."""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from galbench.data.catalog import Catalog  # noqa: E402
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


def _variant_colours(variants: list[str]) -> dict[str, str]:
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {variant: palette[index % len(palette)] for index, variant in enumerate(variants)}


def learning_curves(runs: list[dict], x_key: str, x_label: str, x_scale: float = 1.0, title: str = "") -> bytes:
    """Validation accuracy against a cost (epochs, FLOPs, device-hours): median across seeds with an IQR band."""
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    colours = _variant_colours(variants)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for variant in variants:
        curves = [r["curve"] for r in runs if r["variant"] == variant and r["curve"]]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        xs = np.median([[p[x_key] * x_scale for p in c[:length]] for c in curves], axis=0)
        ys = np.asarray([[p["val_accuracy"] for p in c[:length]] for c in curves])
        low, mid, high = np.percentile(ys, [25, 50, 75], axis=0)
        ax.plot(xs, mid, color=colours[variant], label=f"{variant} (n={len(curves)})")
        ax.fill_between(xs, low, high, color=colours[variant], alpha=0.2, linewidth=0)
    ax.set_xlabel(x_label)
    ax.set_ylabel("validation accuracy")
    if x_key != "epochs":
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "median across seeds, band = interquartile range", fontsize=9)
    return figure_png(fig)


def time_to_threshold_strip(runs: list[dict], thresholds: list[float]) -> bytes:
    """Epochs to each threshold per run; censored runs drawn as open markers at their totals."""
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    colours = _variant_colours(variants)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    width = 0.8 / max(len(variants), 1)
    rng = np.random.default_rng(0)
    for t_index, threshold in enumerate(thresholds):
        for v_index, variant in enumerate(variants):
            rows = [r["thresholds"][str(threshold)] for r in runs if r["variant"] == variant]
            x = t_index + (v_index - (len(variants) - 1) / 2) * width
            for row in rows:
                jitter = rng.uniform(-width / 4, width / 4)
                ax.scatter(x + jitter, row["epochs"], s=22, edgecolors=colours[variant],
                           facecolors=colours[variant] if row["reached"] else "none",
                           label=variant if t_index == 0 and row is rows[0] else None)
    ax.set_xticks(range(len(thresholds)), [f"{t:g}" for t in thresholds])
    ax.set_xlabel("validation-accuracy threshold")
    ax.set_ylabel("epochs to threshold")
    ax.set_title("filled: reached; open: never reached (censored at the run's total)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return figure_png(fig)


def kaplan_meier_curves(curves: dict[str, tuple[list[float], list[float], int]], threshold: float) -> bytes:
    """Fraction of runs not yet at the threshold against epochs (Kaplan-Meier step curves)."""
    colours = _variant_colours(list(curves))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    styles = ["-", "--", ":", "-."]
    for index, (variant, (times, survival, n)) in enumerate(curves.items()):
        xs = [0.0, *times]
        ys = [1.0, *survival]
        # identical steps are common (evaluations fall on the same epochs): widths and dashes keep both visible
        ax.step(xs, ys, where="post", color=colours[variant], label=f"{variant} (n={n})",
                linewidth=max(3.2 - 0.8 * index, 1.0), linestyle=styles[index % len(styles)])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("epochs")
    ax.set_ylabel(f"fraction of runs below {threshold:g}")
    ax.set_title(f"Kaplan-Meier: time to validation accuracy {threshold:g}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)


def confusion_plot(confusion: list[list[int]], classes: list[str], title: str) -> bytes:
    """A confusion matrix (rows true, columns predicted) with counts and row-normalised shading."""
    matrix = np.asarray(confusion, dtype=float)
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(classes), 0.8 + 0.8 * len(classes)))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                    color="white" if shares[i, j] > 0.6 else "black", fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return figure_png(fig)
