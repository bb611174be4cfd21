"""Formula-driven images: FractalDB-style fractals from random iterated function systems.

After Kataoka et al. (2020), "Pre-training without Natural Images": each class is one random IFS (2 to 8
affine maps with parameters in [-1, 1], map probabilities proportional to |det A|), kept only if its
rendered attractor fills enough of the image. Instances of a class vary as in the paper: one parameter of
one map is scaled by a weight in [0.8, 1.2], points are rendered as random 3x3 patches, and images are
flipped; each instance also gets a random colour. The chaos game runs many chains for every instance at
once in NumPy, and classes are spread over all cores. The same parameters give the same images.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from astropy.table import Table

from galbench.data.catalog import Catalog
from galbench.errors import GalbenchError

CHAINS = 32
STEPS = 300
BURN_IN = 12
MIN_FILL, MAX_FILL = 0.06, 0.4


@dataclass(frozen=True)
class FractalParams:
    """What a fractal set is made from; the same parameters give identical images."""

    classes: int = 32
    per_class: int = 64
    size: int = 64
    seed: int = 0

    def check(self) -> None:
        """Reject impossible values before any work starts."""
        if self.classes < 2 or self.per_class < 1:
            raise GalbenchError("fractal sets need at least 2 classes and 1 image per class")
        if not 32 <= self.size <= 512:
            raise GalbenchError(f"fractal size must be between 32 and 512 pixels, got {self.size}")


def _random_ifs(rng: np.random.Generator) -> np.ndarray:
    """(maps, 6) affine parameters a, b, c, d, e, f of one IFS, every map a contraction."""
    maps = int(rng.integers(2, 9))
    system = rng.uniform(-1.0, 1.0, (maps, 6))
    # a map whose linear part stretches any direction makes the chaos game diverge: shrink it below 0.9
    largest = np.linalg.svd(system[:, :4].reshape(maps, 2, 2), compute_uv=False)[:, 0]
    system[:, :4] *= np.minimum(1.0, 0.9 / largest)[:, None]
    return system


def chaos_game(systems: np.ndarray, rng: np.random.Generator, chains: int = CHAINS, steps: int = STEPS) -> np.ndarray:
    """Points of the attractors of a batch of IFSs (B, maps, 6): returns (B, chains * steps, 2)."""
    batch, maps, _ = systems.shape
    a, b, c, d, e, f = (systems[..., k] for k in range(6))
    weights = np.abs(a * d - b * c) + 1e-6
    cumulative = np.cumsum(weights / weights.sum(1, keepdims=True), axis=1)
    cumulative[:, -1] = 1.0
    x = np.zeros((batch, chains))
    y = np.zeros((batch, chains))
    rows = np.arange(batch)[:, None]
    points = np.empty((batch, chains, steps - BURN_IN, 2))
    for step in range(steps):
        draw = rng.random((batch, chains))
        choice = np.minimum((draw[:, :, None] > cumulative[:, None, :]).sum(-1), maps - 1)
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


def generate(params: FractalParams, workers: int | None = None, progress=None) -> Catalog:
    """A labelled fractal image set as an in-memory catalog (classes spread over all cores)."""
    params.check()
    systems = class_systems(params)
    jobs = [(system, label, params) for label, system in enumerate(systems)]
    workers = workers or os.cpu_count() or 1
    images = np.empty((params.classes * params.per_class, 3, params.size, params.size), dtype=np.uint8)
    executor = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        results = executor.map(_render_class, jobs) if executor else map(_render_class, jobs)
        for label, block in enumerate(results):
            images[label * params.per_class:(label + 1) * params.per_class] = block
            if progress:
                progress(params.per_class)
    finally:
        if executor:
            executor.shutdown(cancel_futures=True)
    table = Table()
    table["objid"] = np.arange(images.shape[0], dtype=np.int64)
    table["label"] = np.repeat(np.arange(params.classes), params.per_class).astype(np.int16)
    source = "galbench fractal " + " ".join(f"{k}={v}" for k, v in asdict(params).items())
    return Catalog(table=table, classes=[f"ifs{k:03d}" for k in range(params.classes)], images=images,
                   bands="formula", source=source)
