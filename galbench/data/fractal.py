"""Formula-driven images: FractalDB-style fractals from random iterated function systems.

Two recipes, after Kataoka et al. (2020), "Pre-training without Natural Images", and their published code
(github.com/hirokatsukataoka16/FractalDB-Pretrained-ResNet-PyTorch):

- `fractaldb`, FractalDB's own. A category is a random IFS of 2 to 7 affine maps with parameters uniform in
  [-1, 1] and map probabilities proportional to |det A|, kept if its attractor, 100,000 points drawn at
  512 x 512 px (6 px margin, each axis stretched to fill the frame), fills at least 20% of the pixels. Its
  instances: 25 parameter weightings (one of the six parameters a..f, in every map at once, times 0.8,
  0.9, 1.1 or 1.2, and the unweighted system) x 10 patch renderings x 4 flips = 1,000 per category. A
  rendering draws 200,000 points at 362 x 362 px and pastes a random non-empty 3 x 3 binary patch of grey
  127 at each (a later patch covers an earlier one, as PIL's paste does); it is then averaged down to the
  asked size. Instance k of a category is weighting (k // 4) % 25, rendering k // 100, flip k % 4.
  FractalDB-1k is 1,000 categories of 1,000 instances; its pretraining augmentation is a random crop (224
  of 256 px).
- `galbench`, a cheaper variant for the CPU (the "cpu" preset): 2 to 8 maps made contractive, kept if the
  attractor (3,200 points at the image size) fills 6-40% of it; instances scale one parameter of one map
  by a weight drawn in [0.8, 1.2], 9,216 points rendered as random 3 x 3 patches at twice the size and
  averaged down, random flips and a random colour.

The chaos game runs many chains for many instances at once in NumPy, and categories are spread over all
cores. `generate_to_file` streams categories to a catalog file as they are rendered, so memory stays flat
however many images are asked for. The same parameters give the same images.
"""

from __future__ import annotations

import collections
import itertools
import json
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from astropy.table import Table

from galbench.data.catalog import Catalog, write_catalog_stream
from galbench.errors import GalbenchError
from galbench.fileio import cache_dir, cache_entry, content_hash, write_json_atomic

CHAINS = 32
STEPS = 300
BURN_IN = 12
MIN_FILL, MAX_FILL = 0.06, 0.4
RECIPES = ("galbench", "fractaldb")

# FractalDB's published settings (ifs_search.py, make_fractaldb.py, exe.sh and weights_0.1.csv of their code)
FRACTALDB_MAPS = (2, 7)
FRACTALDB_FILL = 0.2
FRACTALDB_SEARCH_POINTS, FRACTALDB_SEARCH_SIZE, FRACTALDB_PAD = 100_000, 512, 6
FRACTALDB_RENDER_POINTS, FRACTALDB_RENDER_SIZE = 200_000, 362
FRACTALDB_RENDERINGS = 10  # patch renderings per weighting
FRACTALDB_GREY = 127
FRACTALDB_WEIGHTS = np.array([np.ones(6)] + [np.where(np.arange(6) == param, weight, 1.0)
                                             for param in range(6) for weight in (0.8, 0.9, 1.1, 1.2)])
FRACTALDB_CHAINS = 500  # chains of the chaos game; each runs points / chains steps after its burn-in
SEARCH_BATCH = 32  # candidate systems drawn and measured at once
RENDER_BATCH = 25  # renderings computed at once (memory: about 80 MB of points)


@dataclass(frozen=True)
class FractalParams:
    """What a fractal set is made from; the same parameters give identical images."""

    classes: int = 32
    per_class: int = 64
    size: int = 64
    seed: int = 0
    recipe: str = "galbench"  # galbench (the CPU preset's) or fractaldb (Kataoka et al.'s)

    def check(self) -> None:
        """Reject impossible values before any work starts."""
        if self.classes < 2 or self.per_class < 1:
            raise GalbenchError("fractal sets need at least 2 classes and 1 image per class")
        if not 32 <= self.size <= 512:
            raise GalbenchError(f"fractal size must be between 32 and 512 pixels, got {self.size}")
        if self.recipe not in RECIPES:
            raise GalbenchError(f"unknown fractal recipe {self.recipe!r}", fix=f"one of {', '.join(RECIPES)}")


def _random_ifs(rng: np.random.Generator) -> np.ndarray:
    """(maps, 6) affine parameters a, b, c, d, e, f of one IFS, every map a contraction."""
    maps = int(rng.integers(2, 9))
    system = rng.uniform(-1.0, 1.0, (maps, 6))
    # a map whose linear part stretches any direction makes the chaos game diverge: shrink it below 0.9
    largest = np.linalg.svd(system[:, :4].reshape(maps, 2, 2), compute_uv=False)[:, 0]
    system[:, :4] *= np.minimum(1.0, 0.9 / largest)[:, None]
    return system


def chaos_game(systems: np.ndarray, rng: np.random.Generator, chains: int = CHAINS, steps: int = STEPS,
               probabilities: np.ndarray | None = None) -> np.ndarray:
    """Points of the attractors of a batch of IFSs (B, maps, 6): returns (B, chains * (steps - burn-in), 2).

    Map probabilities default to |det A| (plus a little); maps given probability 0 are never chosen, which
    lets systems with fewer maps share a batch. Points of diverging systems may be infinite or NaN.
    """
    batch, maps, _ = systems.shape
    a, b, c, d, e, f = (systems[..., k] for k in range(6))
    weights = np.abs(a * d - b * c) + 1e-6 if probabilities is None else probabilities
    cumulative = np.cumsum(weights / weights.sum(1, keepdims=True), axis=1)
    cumulative[cumulative >= 1 - 1e-12] = 1.0
    x = np.zeros((batch, chains))
    y = np.zeros((batch, chains))
    rows = np.arange(batch)[:, None]
    points = np.empty((batch, chains, steps - BURN_IN, 2))
    for step in range(steps):
        draw = rng.random((batch, chains))
        choice = np.minimum((draw[:, :, None] > cumulative[:, None, :]).sum(-1), maps - 1)
        with np.errstate(over="ignore", invalid="ignore"):  # FractalDB's systems may diverge; callers drop them
            x, y = (a[rows, choice] * x + b[rows, choice] * y + e[rows, choice],
                    c[rows, choice] * x + d[rows, choice] * y + f[rows, choice])
        if step >= BURN_IN:
            points[:, :, step - BURN_IN, 0] = x
            points[:, :, step - BURN_IN, 1] = y
    return points.reshape(batch, -1, 2)


def rasterize(points: np.ndarray, size: int) -> np.ndarray:
    """Hit counts (B, size, size) of points scaled into the image by each instance's robust bounding box."""
    batch = points.shape[0]
    finite = np.where(np.isfinite(points), points, 0.0)
    low = np.quantile(finite, 0.005, axis=1, keepdims=True)
    high = np.quantile(finite, 0.995, axis=1, keepdims=True)
    span = np.maximum((high - low).max(-1, keepdims=True), 1e-9)
    centre = (high + low) / 2
    scaled = ((finite - centre) / span * 0.92 + 0.5) * (size - 1)
    pixels = np.clip(np.round(scaled).astype(np.int64), 0, size - 1)
    flat = pixels[..., 1] * size + pixels[..., 0] + (np.arange(batch) * size * size)[:, None]
    return np.bincount(flat.ravel(), minlength=batch * size * size).reshape(batch, size, size)


def fill_rate(system: np.ndarray, rng: np.random.Generator, size: int) -> float:
    """Fraction of pixels the attractor of one IFS covers."""
    return float((rasterize(chaos_game(system[None], rng, chains=16, steps=200), size) > 0).mean())


def class_systems(params: FractalParams) -> list[np.ndarray]:
    """One IFS per class, drawn until its attractor fills between MIN_FILL and MAX_FILL of the image."""
    rng = np.random.default_rng([params.seed, 0])
    systems = []
    while len(systems) < params.classes:
        system = _random_ifs(rng)
        if MIN_FILL <= fill_rate(system, rng, params.size) <= MAX_FILL:
            systems.append(system)
    return systems


def _render_class(args) -> np.ndarray:
    system, label, params = args
    rng = np.random.default_rng([params.seed, 1, label])
    count = params.per_class
    instances = np.repeat(system[None], count, axis=0)
    # intra-class variation: scale one parameter of one map by a weight in [0.8, 1.2]
    which_map = rng.integers(0, system.shape[0], count)
    which_param = rng.integers(0, 6, count)
    instances[np.arange(count), which_map, which_param] *= rng.uniform(0.8, 1.2, count)
    # render at twice the size, then average 2x2 blocks: points stay finer than a pixel at small sizes
    fine = 2 * params.size
    hits = rasterize(chaos_game(instances, rng), fine) > 0
    # patch rendering: every point becomes a random 3x3 binary patch
    patches = rng.random((count, 3, 3)) < 0.5
    patches[:, 1, 1] = True
    canvas = np.zeros((count, fine + 2, fine + 2), dtype=bool)
    for dy in range(3):
        for dx in range(3):
            canvas[:, dy:dy + fine, dx:dx + fine] |= hits & patches[:, dy, dx][:, None, None]
    mask = canvas[:, 1:-1, 1:-1].reshape(count, params.size, 2, params.size, 2).mean(axis=(2, 4))
    flip_x, flip_y = rng.random(count) < 0.5, rng.random(count) < 0.5
    mask = np.where(flip_x[:, None, None], mask[:, :, ::-1], mask)
    mask = np.where(flip_y[:, None, None], mask[:, ::-1, :], mask)
    colours = rng.uniform(80, 255, (count, 3))
    return (mask[:, None, :, :] * colours[:, :, None, None]).astype(np.uint8)


def _fractaldb_pixels(points: np.ndarray, size: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """FractalDB's rescaling: each axis stretched to [pad, size - pad] (flat pixel indices, finite-point mask)."""
    finite = np.isfinite(points).all(-1)
    safe = np.where(finite[..., None], points, np.nan)
    with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an instance whose every point diverged
        low = np.nanmin(safe, axis=1, keepdims=True)
        high = np.nanmax(safe, axis=1, keepdims=True)
        scaled = (safe - low) / np.maximum(high - low, 1e-12) * (size - 2 * pad) + pad
    pixels = np.clip(np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0), 0, size - 1).astype(np.int64)
    return pixels[..., 1] * size + pixels[..., 0], finite


def fractaldb_fill(systems: np.ndarray, probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """FractalDB's filling rate of each system (B, maps, 6): the share of pixels its 100,000 points hit at 512 px."""
    steps = FRACTALDB_SEARCH_POINTS // FRACTALDB_CHAINS + BURN_IN
    points = chaos_game(systems, rng, FRACTALDB_CHAINS, steps, probabilities)
    flat, finite = _fractaldb_pixels(points, FRACTALDB_SEARCH_SIZE, FRACTALDB_PAD)
    area = FRACTALDB_SEARCH_SIZE**2
    offsets = (np.arange(len(systems)) * area)[:, None]
    hits = np.bincount((flat + offsets)[finite], minlength=len(systems) * area).reshape(len(systems), area)
    return (hits > 0).mean(1)


def _fractaldb_candidates(seed: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch of random systems (padded to the largest map count with probability-0 maps)."""
    rng = np.random.default_rng([seed, 0, batch])
    low, high = FRACTALDB_MAPS
    maps = rng.integers(low, high + 1, SEARCH_BATCH)
    systems = rng.uniform(-1.0, 1.0, (SEARCH_BATCH, high, 6))
    used = np.arange(high)[None, :] < maps[:, None]
    systems[~used] = 0.0
    probabilities = np.abs(systems[..., 0] * systems[..., 3] - systems[..., 1] * systems[..., 2]) * used
    return systems, probabilities / probabilities.sum(1, keepdims=True)


def _fractaldb_search_batch(args) -> list[tuple[np.ndarray, np.ndarray]]:
    seed, batch = args
    systems, probabilities = _fractaldb_candidates(seed, batch)
    fill = fractaldb_fill(systems, probabilities, np.random.default_rng([seed, 2, batch]))
    return [(systems[k], probabilities[k]) for k in np.flatnonzero(fill >= FRACTALDB_FILL)]


def fractaldb_systems(params: FractalParams, workers: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (system, map probabilities) per category, FractalDB's search: kept if the filling rate >= 0.2.

    Candidates are drawn in numbered batches, each from its own random stream, and kept in batch order, so
    the categories are the same whatever the number of workers.
    """
    found: list[tuple[np.ndarray, np.ndarray]] = []
    for accepted in _ordered(_fractaldb_search_batch, ((params.seed, b) for b in itertools.count()), workers):
        found += accepted
        if len(found) >= params.classes:
            break
    return found[:params.classes]


def _fractaldb_patches(flat: np.ndarray, finite: np.ndarray, patterns: np.ndarray, size: int) -> np.ndarray:
    """Paste a 3x3 binary patch (9-bit pattern, first bit top left) at every point, later points on top."""
    batch, count = flat.shape
    area = size * size
    owner = np.full(batch * area, -1, dtype=np.int64)
    order = np.arange(count, dtype=np.int64)[None, :] * 9
    rows, columns = flat // size, flat % size
    for cell in range(9):
        # PIL pastes the patch with its top left corner at (x + 1, y + 1)
        row, column = rows + 1 + cell // 3, columns + 1 + cell % 3
        inside = finite & (row < size) & (column < size)
        target = (row * size + column + (np.arange(batch) * area)[:, None])[inside]
        np.maximum.at(owner, target, np.broadcast_to(order + cell, flat.shape)[inside])
    drawn = owner >= 0
    point, cell = owner[drawn] // 9, owner[drawn] % 9
    which = np.flatnonzero(drawn) // area
    canvas = np.zeros(batch * area, dtype=np.float32)
    canvas[drawn] = (patterns[which, point] >> (8 - cell)) & 1
    return canvas.reshape(batch, size, size)


def _render_fractaldb_class(args) -> np.ndarray:
    (system, probabilities), label, params = args
    renderings = -(-params.per_class // 4)  # four flips share one rendering
    steps = FRACTALDB_RENDER_POINTS // FRACTALDB_CHAINS + BURN_IN
    coverage = torch.empty(renderings, 1, params.size, params.size)
    for first in range(0, renderings, RENDER_BATCH):
        index = np.arange(first, min(first + RENDER_BATCH, renderings))
        rng = np.random.default_rng([params.seed, 1, label, first])
        # rendering q: weighting q % 25 (every map's parameter scaled at once), patch drawing q // 25
        systems = system[None] * FRACTALDB_WEIGHTS[index % len(FRACTALDB_WEIGHTS)][:, None, :]
        points = chaos_game(systems, rng, FRACTALDB_CHAINS, steps, np.repeat(probabilities[None], len(index), 0))
        flat, finite = _fractaldb_pixels(points, FRACTALDB_RENDER_SIZE, FRACTALDB_PAD)
        patterns = rng.integers(1, 512, flat.shape)
        canvas = torch.from_numpy(_fractaldb_patches(flat, finite, patterns, FRACTALDB_RENDER_SIZE))
        coverage[first:first + len(index)] = F.adaptive_avg_pool2d(canvas[:, None], params.size)
    grey = (coverage * FRACTALDB_GREY).round_().to(torch.uint8).numpy()
    instance = np.arange(params.per_class)
    images = grey[instance // 4]
    flip = instance % 4  # none, top-bottom, left-right, both
    images = np.where((flip % 2 == 1)[:, None, None, None], images[:, :, ::-1, :], images)
    images = np.where((flip >= 2)[:, None, None, None], images[:, :, :, ::-1], images)
    return np.repeat(images, 3, axis=1)


def _ordered(function: Callable, jobs, workers: int) -> Iterator:
    """`function(job)` for each job in order, over `workers` processes with at most 2 x workers in flight,
    so finished results never pile up in memory (and an endless job stream can be stopped)."""
    if workers <= 1:
        yield from map(function, jobs)
        return
    # spawned, not forked: the renderers use torch, whose OpenMP pool deadlocks in a child forked from a
    # process that has already used it
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        jobs = iter(jobs)
        pending = collections.deque(executor.submit(function, job) for job in itertools.islice(jobs, 2 * workers))
        while pending:
            result = pending.popleft().result()
            for job in itertools.islice(jobs, 1):
                pending.append(executor.submit(function, job))
            yield result
    finally:
        executor.shutdown(cancel_futures=True)


def render_blocks(params: FractalParams, workers: int | None = None) -> Iterator[np.ndarray]:
    """The images of each category in turn, (per_class, 3, size, size) uint8, rendered over `workers` cores."""
    params.check()
    workers = workers or os.cpu_count() or 1
    if params.recipe == "fractaldb":
        systems, render = fractaldb_systems(params, workers), _render_fractaldb_class
    else:
        systems, render = class_systems(params), _render_class
    yield from _ordered(render, ((system, label, params) for label, system in enumerate(systems)), workers)


def _table(params: FractalParams) -> tuple[Table, list[str], str]:
    table = Table()
    table["objid"] = np.arange(params.classes * params.per_class, dtype=np.int64)
    table["label"] = np.repeat(np.arange(params.classes), params.per_class).astype(np.int16)
    source = "galbench fractal " + " ".join(f"{k}={v}" for k, v in asdict(params).items())
    return table, [f"ifs{k:03d}" for k in range(params.classes)], source


def generate(params: FractalParams, workers: int | None = None, progress=None) -> Catalog:
    """A labelled fractal image set as an in-memory catalog (for small sets; see `generate_to_file`)."""
    blocks = []
    for block in render_blocks(params, workers):
        blocks.append(block)
        if progress:
            progress(params.per_class)
    table, classes, source = _table(params)
    return Catalog(table=table, classes=classes, images=np.concatenate(blocks), bands="formula", source=source)


def generate_to_file(params: FractalParams, path: str | os.PathLike, workers: int | None = None,
                     progress=None) -> Path:
    """Write a fractal set to a catalog file category by category: memory stays flat at any size."""
    table, classes, source = _table(params)

    def blocks():
        for block in render_blocks(params, workers):
            yield block
            if progress:
                progress(params.per_class)

    return write_catalog_stream(path, table, classes, (3, params.size, params.size), blocks(), bands="formula",
                                source=source)


def cached_fractal_set(params: FractalParams, progress_factory=None, workers: int | None = None) -> tuple[Path, float]:
    """The cached catalog file of a fractal set, generated (streamed) on first use, and the seconds that took.

    The seconds are those of the generation that made the file, kept beside it, so a pretraining that
    reuses the set reports what the set cost to make.
    """
    params.check()
    key = content_hash(asdict(params))
    path = cache_dir("fractal") / f"fractal-{key}.fits"
    timing = path.with_suffix(".json")
    with cache_entry(timing, "cached fractal set") as missing:  # the timing is written last
        if missing:
            start = time.perf_counter()
            if progress_factory is None:
                generate_to_file(params, path, workers)
            else:
                with progress_factory("generating fractals", params.classes * params.per_class, "images") as advance:
                    generate_to_file(params, path, workers, advance)
            write_json_atomic(timing, {"generation_seconds": round(time.perf_counter() - start, 3)})
    return path, json.loads(timing.read_text())["generation_seconds"]
