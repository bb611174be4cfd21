"""matplotlib figures: montages of catalogs (PNG) and the report's plots (SVG text).

Report plots take plain numbers (the report module prepares them from the statistics) and tell arms apart
without colour too: every arm has its own marker and line style as well as its colour.
"""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from galbench.data.catalog import Catalog  # noqa: E402
from galbench.fileio import atomic_path  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINE_STYLES = ("-", "--", ":", "-.")
FIGURE_SIZE = (6.4, 3.9)


def figure_png(fig) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def figure_svg(fig) -> str:
    """Render a figure to SVG text (text kept as text, no timestamp) and close it."""
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "galbench"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
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


def arm_styles(arms: list[str]) -> dict[str, dict]:
    """Colour, marker and line style per arm, in a fixed order, so each arm looks the same in every plot."""
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {arm: {"color": palette[i % len(palette)], "marker": MARKERS[i % len(MARKERS)],
                  "linestyle": LINE_STYLES[i % len(LINE_STYLES)]} for i, arm in enumerate(arms)}


def _log_x(ax, unit: str, ticks: list[float] | None = None) -> None:
    """A log x axis labelled in plain numbers or engineering units (1 G, 2 G, 5 G, 10 G), minor ticks bare.

    `ticks` (the sizes a suite ran, say) replace the 1-2-5 sequence, which can leave a short axis bare.
    """
    ax.set_xscale("log")
    if ticks:
        ax.set_xticks(ticks)
    else:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    if unit == "count":
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    else:
        ax.xaxis.set_major_formatter(EngFormatter(unit=unit, places=0, sep=" "))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _finish(ax, title: str, legend: bool = True) -> None:
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)


def learning_curves(curves: dict[str, list[list[tuple[float, float]]]], x_label: str, title: str,
                    unit: str = "", offsets: dict[str, float] | None = None) -> str:
    """Validation accuracy against a cost: median over runs with an interquartile band, one style per arm.

    `curves[arm]` holds each run's (cost, accuracy) points. With `unit` the x axis is logarithmic in that
    unit; `offsets[arm]` (a pretraining's cost) shifts an arm's curve right and is marked on the axis, so
    the curve starts where the arm's real bill starts.
    """
    styles = arm_styles(list(curves))
    offsets = offsets or {}
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    for arm, runs in curves.items():
        runs = [run for run in runs if run]
        if not runs:
            continue
        length = min(len(run) for run in runs)
        offset = offsets.get(arm, 0.0)
        xs = offset + np.median([[x for x, _ in run[:length]] for run in runs], axis=0)
        ys = np.asarray([[y for _, y in run[:length]] for run in runs])
        low, mid, high = np.percentile(ys, [25, 50, 75], axis=0)
        style = styles[arm]
        label = f"{arm} (n={len(runs)})" + (f", starts after pretraining {_eng(offset, unit)}" if offset else "")
        ax.plot(xs, mid, color=style["color"], linestyle=style["linestyle"], marker=style["marker"],
                markersize=4, markevery=max(1, length // 8), label=label)
        ax.fill_between(xs, low, high, color=style["color"], alpha=0.15, linewidth=0)
        if offset:
            ax.axvline(offset, color=style["color"], linestyle=style["linestyle"], linewidth=0.9, alpha=0.8)
    ax.set_xlabel(x_label)
    ax.set_ylabel("validation accuracy")
    if unit:
        _log_x(ax, unit)
    _finish(ax, title)
    return figure_svg(fig)


def _eng(value: float, unit: str) -> str:
    return EngFormatter(unit=unit, places=2, sep=" ")(value)


def time_to_threshold_strip(rows: dict[str, list[dict]], thresholds: list[float], metric_label: str) -> str:
    """Epochs to each threshold per run; runs that never got there drawn open, at their totals."""
    styles = arm_styles(list(rows))
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    width = 0.8 / max(len(rows), 1)
    rng = np.random.default_rng(0)
    for t_index, threshold in enumerate(thresholds):
        for v_index, (arm, runs) in enumerate(rows.items()):
            style = styles[arm]
            x = t_index + (v_index - (len(rows) - 1) / 2) * width
            for r_index, run in enumerate(runs):
                crossing = run[str(threshold)]
                ax.scatter(x + rng.uniform(-width / 4, width / 4), crossing["epochs"], s=26, marker=style["marker"],
                           edgecolors=style["color"], facecolors=style["color"] if crossing["reached"] else "none",
                           label=arm if t_index == 0 and r_index == 0 else None)
    ax.set_xticks(range(len(thresholds)), [f"{t:g}" for t in thresholds])
    ax.set_xlabel(f"{metric_label} threshold")
    ax.set_ylabel("epochs to threshold")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title("filled: reached; open: never reached (drawn at the run's total epochs)", fontsize=9)
    return figure_svg(fig)


def kaplan_meier_curves(curves: dict[str, tuple[list[float], list[float], int]], x_label: str, title: str,
                        unit: str = "") -> str:
    """Fraction of runs not yet at a threshold against cost (Kaplan-Meier steps), one style per arm.

    With `unit` (FLOP, s) the cost axis is labelled in engineering units (1 T, 10 T).
    """
    styles = arm_styles(list(curves))
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    for index, (arm, (times, survival, n)) in enumerate(curves.items()):
        style = styles[arm]
        # identical steps are common (evaluations fall on the same epochs): widths and dashes keep both visible
        ax.step([0.0, *times], [1.0, *survival], where="post", color=style["color"], linestyle=style["linestyle"],
                linewidth=max(3.0 - 0.7 * index, 1.0), label=f"{arm} (n={n})")
        ax.plot(times, survival, linestyle="none", marker=style["marker"], color=style["color"], markersize=5)
    ax.set_ylim(-0.03, 1.03)
    if unit:
        ax.xaxis.set_major_formatter(EngFormatter(unit=unit, sep=" "))
    ax.set_xlabel(x_label)
    ax.set_ylabel("fraction of runs not yet there")
    _finish(ax, title)
    return figure_svg(fig)


def accuracy_by_arm(arms: list[tuple[str, list[float], float, tuple[float, float] | None]], y_label: str,
                    chance: float | None, title: str) -> str:
    """Each run's accuracy (points), the arm's mean and its 95% interval (bar; none for one run), chance level."""
    styles = arm_styles([arm for arm, *_ in arms])
    fig, ax = plt.subplots(figsize=(max(3.6, 1.3 * len(arms) + 2), 3.9))
    rng = np.random.default_rng(0)
    for index, (arm, values, mean, ci) in enumerate(arms):
        style = styles[arm]
        ax.scatter(index + rng.uniform(-0.12, 0.12, len(values)), values, s=18, marker=style["marker"],
                   facecolors="none", edgecolors=style["color"], alpha=0.8)
        error = None if ci is None else [[mean - ci[0]], [ci[1] - mean]]
        ax.errorbar(index + 0.25, mean, yerr=error, fmt=style["marker"], color=style["color"], capsize=4,
                    markersize=7)
    if chance is not None:
        ax.axhline(chance, color="0.35", linestyle=":", linewidth=1)
        ax.annotate(f"chance (one class always guessed) {chance:.2f}", (len(arms) - 0.5, chance), fontsize=7, ha="right",
                    va="bottom", color="0.35")
    ax.set_xticks(range(len(arms)), [arm for arm, *_ in arms])
    ax.set_xlim(-0.6, len(arms) - 0.4)
    ax.set_ylabel(y_label)
    _finish(ax, title, legend=False)
    return figure_svg(fig)


def label_efficiency(series: dict[str, tuple[list[int], list[float], list[float], list[float]]],
                     chance: float | None, y_label: str) -> str:
    """Accuracy against labelled training galaxies (log axis): arm means with their 95% interval bands."""
    styles = arm_styles(list(series))
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    for arm, (sizes, means, lows, highs) in series.items():
        style = styles[arm]
        ax.plot(sizes, means, color=style["color"], linestyle=style["linestyle"], marker=style["marker"], label=arm)
        ax.fill_between(sizes, lows, highs, color=style["color"], alpha=0.15, linewidth=0)
    if chance is not None:
        ax.axhline(chance, color="0.35", linestyle=":", linewidth=1, label=f"chance {chance:.2f}")
    _log_x(ax, "count", sorted({size for sizes, *_ in series.values() for size in sizes}))
    ax.set_xlabel("labelled training galaxies")
    ax.set_ylabel(y_label)
    _finish(ax, "mean over runs; band: 95% interval (seeds and test galaxies)")
    return figure_svg(fig)


def confusion_plot(confusion: list[list[int]], classes: list[str], title: str) -> str:
    """A confusion matrix (rows true, columns predicted) with counts and row-normalised shading."""
    matrix = np.asarray(confusion, dtype=float)
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.4 + 0.9 * len(classes), 1.0 + 0.8 * len(classes)))
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
    return figure_svg(fig)


def reliability_diagrams(arms: dict[str, dict]) -> str:
    """Per arm: accuracy against confidence in each bin, before (open, dashed) and after temperature scaling."""
    fig, axes = plt.subplots(1, len(arms), figsize=(3.2 * len(arms) + 0.4, 3.4), squeeze=False)
    for ax, (arm, calibration) in zip(axes[0], arms.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8)
        for key, style, label in (("reliability_before", dict(linestyle="--", marker="o", mfc="none"),
                                   f"raw softmax, ECE {calibration['ece_before']:.3f}"),
                                  ("reliability_after", dict(linestyle="-", marker="s"),
                                   f"T = {calibration['temperature']:.2f}, ECE {calibration['ece_after']:.3f}")):
            bins = calibration[key]
            used = [i for i, count in enumerate(bins["count"]) if count]
            ax.plot([bins["confidence"][i] for i in used], [bins["accuracy"][i] for i in used], label=label,
                    color="black", markersize=4, **style)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        _finish(ax, arm)
    return figure_svg(fig)


def probe_curves(series: dict[str, list[dict]]) -> str:
    """k-NN (dashed, open) and linear-probe (solid) validation accuracy during each arm's pretraining."""
    styles = arm_styles(list(series))
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    for arm, points in series.items():
        style = styles[arm]
        epochs = [p["epoch"] for p in points]
        ax.plot(epochs, [p["linear_probe_accuracy"] for p in points], color=style["color"], marker=style["marker"],
                linestyle="-", label=f"{arm}: linear probe")
        ax.plot(epochs, [p["knn_accuracy"] for p in points], color=style["color"], marker=style["marker"],
                mfc="none", linestyle="--", label=f"{arm}: k-NN")
    ax.set_xlabel("pretraining epoch")
    ax.set_ylabel("validation accuracy of the representation")
    _finish(ax, "representation quality during pretraining")
    return figure_svg(fig)
