"""Rendering: rich tables for the terminal, Markdown and HTML reports. Renders results; computes no statistics."""

from __future__ import annotations

import numpy as np
from rich.table import Table as RichTable

from galbench.catalog import Catalog


def catalog_info_table(catalog: Catalog) -> RichTable:
    """A `fitsinfo`-like summary of a catalog file: rows, columns, classes, images."""
    table = RichTable(title=str(catalog.path or "catalog"), show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("rows", f"{len(catalog):,}")
    table.add_row("columns", ", ".join(catalog.table.colnames))
    counts = catalog.class_counts()
    total = max(len(catalog), 1)
    for index, name in enumerate(catalog.classes):
        table.add_row(f"class {index}" if index else "classes", f"{name}: {counts.get(name, 0):,} "
                      f"({100 * counts.get(name, 0) / total:.1f}%)")
    if "unknown" in counts:
        table.add_row("", f"unknown (label -1): {counts['unknown']:,}")
    if catalog.images is not None:
        n, bands, height, width = catalog.images.shape
        size_mb = catalog.images.nbytes / 1e6
        table.add_row("IMAGES", f"{n:,} x {bands} x {height} x {width} uint8 ({size_mb:,.1f} MB)")
        table.add_row("bands", catalog.bands)
        table.add_row("pixel scale", f"{catalog.pixscale:.3f} arcsec/pixel" if catalog.pixscale else "not given")
        table.add_row("source", catalog.source or "not given")
    else:
        table.add_row("IMAGES", "none (catalog only)")
    for column in ("ra", "dec"):
        if column in catalog.table.colnames:
            values = np.asarray(catalog.table[column], dtype=float)
            table.add_row(column, f"{values.min():.4f} .. {values.max():.4f} deg")
    return table


def _median_or_dash(values: list[float]) -> str:
    return f"{np.median(values):.2f}" if values else "-"


def run_summary_table(results: list[dict], thresholds: list[float], title: str = "suite summary") -> RichTable:
    """One row per variant: runs, test accuracy, and median epochs to each threshold (reached n/N)."""
    table = RichTable(title=title, title_justify="left")
    table.add_column("variant", style="bold")
    table.add_column("runs", justify="right")
    table.add_column("test acc (mean ± sd)", justify="right")
    for threshold in thresholds:
        table.add_column(f"epochs to {threshold:g}\n(median, reached)", justify="right")
    variants = list(dict.fromkeys(r["variant"] for r in results))
    for variant in variants:
        runs = [r for r in results if r["variant"] == variant]
        accuracies = np.asarray([r["test_accuracy"] for r in runs if r["test_accuracy"] is not None], dtype=float)
        accuracy = f"{accuracies.mean():.3f} ± {accuracies.std(ddof=1) if accuracies.size > 1 else 0:.3f}" \
            if accuracies.size else "-"
        cells = []
        for threshold in thresholds:
            hits = [r["thresholds"][str(threshold)] for r in runs]
            reached = [h["epochs"] for h in hits if h["reached"]]
            cells.append(f"{_median_or_dash(reached)} ({len(reached)}/{len(hits)})")
        table.add_row(variant, str(len(runs)), accuracy, *cells)
    return table
