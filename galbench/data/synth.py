"""Simulated SDSS-like galaxies rendered with GalSim: the offline default dataset.

Every galaxy is drawn from its own random stream seeded by (seed, row), so the same arguments give
byte-identical files whatever the number of worker processes.

The model, per galaxy:

- a redshift 0.02 < z < 0.1 drawn uniformly in volume, a physical size per class, hence an angular
  size; fluxes from an r magnitude between 13.5 and 17.5 (the brighter part of SDSS spectroscopic
  targets, as in the Nair & Abraham sample);
- class profiles: elliptical (Sersic n 3-5.5, red), lenticular (de Vaucouleurs bulge plus exponential
  disc, no arms, red), spiral (small bulge, exponential disc, logarithmic arms with star-forming knots
  along them, blue), edge-on (GalSim's InclinedExponential at 80-90 degrees, thin), irregular (clumps
  from GalSim's RandomKnots plus a faint lopsided disc, blue);
- a Kolmogorov seeing PSF with FWHM 1.1-1.8 arcsec, SDSS sky noise per band, occasional neighbouring
  stars;
- the cutout's pixel scale set per galaxy from its size, as Galaxy Zoo's cutouts were (the field of view
  is about eight half-light radii), with SDSS's 0.396 arcsec/pixel as the finest; values are in
  nanomaggies per native SDSS pixel, so the surface brightness and noise behave as in a resampled
  SkyServer cutout;
- g, r and i rendered separately, then combined with the Lupton et al. (2004) asinh stretch into the
  i, r, g -> R, G, B colour image that SkyServer serves.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import galsim
import numpy as np
from astropy.table import Table
from astropy.visualization import make_lupton_rgb

from galbench.data.catalog import Catalog
from galbench.errors import GalbenchError

SDSS_PIXSCALE = 0.396  # arcsec per pixel
SKY_SIGMA = {"g": 0.045, "r": 0.05, "i": 0.07}  # nanomaggies per native pixel, about SDSS's
BANDS = ("g", "r", "i")
# flux in g, r, i relative to r for the stellar populations used
COLOURS = {
    "old": (0.58, 1.0, 1.28),
    "disc": (0.78, 1.0, 1.12),
    "young": (1.15, 1.0, 0.85),
    "star": (0.7, 1.0, 1.12),
}
# physical half-light radius (kpc): log-normal median and spread
SIZES_KPC = {"elliptical": (4.0, 0.3), "lenticular": (3.5, 0.3), "spiral": (5.0, 0.3),
             "edge-on": (5.0, 0.3), "irregular": (2.5, 0.35)}
CLASSES = tuple(SIZES_KPC)
DEFAULT_CLASSES = "elliptical,spiral,edge-on"
LUPTON_Q, LUPTON_STRETCH = 8.0, 0.6


@dataclass(frozen=True)
class SynthParams:
    """What `galbench data synth` generates; the same parameters give byte-identical output."""

    n: int = 2000
    size: int = 64
    seed: int = 0
    classes: str = DEFAULT_CLASSES  # "name[:weight],..."
    star_probability: float = 0.3

    def class_mix(self) -> tuple[list[str], np.ndarray]:
        """Class names and normalised weights parsed from `classes`."""
        names, weights = [], []
        for part in self.classes.split(","):
            name, _, weight = part.strip().partition(":")
            if name not in SIZES_KPC:
                raise GalbenchError(f"unknown class {name!r}", where="synth classes",
                                    fix=f"choose from {', '.join(CLASSES)}")
            try:
                value = float(weight) if weight else 1.0
            except ValueError:
                raise GalbenchError(f"weight {weight!r} of class {name!r} is not a number",
                                    where="synth classes") from None
            if not value > 0:
                raise GalbenchError(f"weight of class {name!r} must be positive", where="synth classes")
            names.append(name)
            weights.append(value)
        if len(set(names)) != len(names):
            raise GalbenchError("a class is named twice", where="synth classes")
        return names, np.asarray(weights) / sum(weights)

    def check(self) -> None:
        """Reject impossible values before any work starts."""
        if self.n < 1:
            raise GalbenchError(f"n must be at least 1, got {self.n}", where="synth")
        if not 32 <= self.size <= 512:
            raise GalbenchError(f"size must be between 32 and 512 pixels, got {self.size}", where="synth")
        if not 0 <= self.star_probability <= 1:
            raise GalbenchError("star_probability must be within [0, 1]", where="synth")
        self.class_mix()


def class_labels(params: SynthParams) -> np.ndarray:
    """Labels for every row: exact class proportions (largest remainder), shuffled by the seed."""
    names, weights = params.class_mix()
    exact = weights * params.n
    counts = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - counts), kind="stable")
    counts[remainder_order[: params.n - counts.sum()]] += 1
    labels = np.repeat(np.arange(len(names)), counts)
    np.random.default_rng([params.seed, 2**31]).shuffle(labels)
    return labels.astype(np.int16)


def _angular_scale_kpc_per_arcsec(z: float) -> float:
    # angular-diameter distance, flat LCDM (H0=70, Om=0.3) to first order in z: fine for z < 0.1
    hubble_distance_kpc = 299792.458 / 70.0 * 1000.0
    comoving = hubble_distance_kpc * (z - 0.75 * 0.3 * z * z / 2)
    return comoving / (1 + z) / 206264.806


def _spiral_images(rng: np.random.Generator, grid: int, hlr: float, scale: float):
    """Face-on logarithmic arms and the star-forming knots along them, as two pixel arrays."""
    arms = int(rng.choice([2, 2, 2, 3, 4]))
    pitch = math.radians(rng.uniform(10, 30))
    chirality = rng.choice([-1.0, 1.0])
    phase = rng.uniform(0, 2 * math.pi)
    coords = (np.arange(grid) - (grid - 1) / 2) * scale
    x, y = np.meshgrid(coords, coords)
    radius = np.hypot(x, y) + 1e-3
    theta = np.arctan2(y, x)
    disc_scale = hlr / 1.678
    wave = np.cos(arms * (theta - chirality * np.log(radius / disc_scale) / math.tan(pitch)) + phase)
    sharpness = rng.uniform(2.0, 5.0)
    envelope = np.exp(-radius / disc_scale) * (1 - np.exp(-((radius / (0.4 * hlr)) ** 2)))
    arm_image = envelope * ((wave + 1) / 2) ** sharpness
    knot_image = np.zeros_like(arm_image)
    n_knots = int(rng.integers(15, 60))
    knot_sigma = max(0.08 * hlr, 0.6 * scale)
    for _ in range(n_knots):
        r_knot = disc_scale * rng.gamma(2.0, 0.9) + 0.3 * hlr
        arm = rng.integers(arms)
        angle = chirality * np.log(r_knot / disc_scale) / math.tan(pitch) + (2 * math.pi * arm - phase) / arms
        angle += rng.normal(0, 0.12)
        kx, ky = r_knot * math.cos(angle), r_knot * math.sin(angle)
        knot_image += rng.uniform(0.3, 1.0) * np.exp(-((x - kx) ** 2 + (y - ky) ** 2) / (2 * knot_sigma**2))
    return arm_image, knot_image


def _sersic_index(rng: np.random.Generator, low: float, high: float) -> float:
    # GalSim builds a lookup table per distinct n; a 0.25 grid lets each worker cache a dozen of them
    return float(np.round(rng.uniform(low, high) * 4) / 4)


def _components(name: str, rng: np.random.Generator, hlr: float, flux: float, grid_scale: float):
    """The galaxy as (GalSim profile, colour) pairs, before PSF and orientation."""
    ud = galsim.BaseDeviate(int(rng.integers(1, 2**31)))
    if name == "elliptical":
        profile = galsim.Sersic(n=_sersic_index(rng, 3.0, 5.5), half_light_radius=hlr, flux=flux)
        return [(profile, "old")], rng.uniform(0.55, 1.0)
    if name == "lenticular":
        bulge_fraction = rng.uniform(0.3, 0.6)
        bulge = galsim.DeVaucouleurs(half_light_radius=0.35 * hlr, flux=flux * bulge_fraction)
        disc = galsim.Exponential(half_light_radius=hlr, flux=flux * (1 - bulge_fraction))
        q = rng.uniform(0.35, 1.0)
        return [(bulge.shear(q=min(1.0, q + 0.3), beta=0 * galsim.degrees), "old"),
                (disc.shear(q=q, beta=0 * galsim.degrees), "old")], 1.0
    if name == "spiral":
        bulge_fraction = rng.uniform(0.05, 0.3)
        arm_fraction, knot_fraction = rng.uniform(0.25, 0.45), rng.uniform(0.05, 0.15)
        disc_fraction = 1 - bulge_fraction - arm_fraction - knot_fraction
        grid = 96
        scale = 8 * hlr / grid
        arm_image, knot_image = _spiral_images(rng, grid, hlr, scale)
        q = rng.uniform(0.4, 1.0)
        beta = 0 * galsim.degrees
        parts = [(galsim.Sersic(n=_sersic_index(rng, 2.0, 4.0), half_light_radius=0.25 * hlr,
                                flux=flux * bulge_fraction).shear(q=min(1.0, q + 0.3), beta=beta), "old"),
                 (galsim.Exponential(half_light_radius=hlr, flux=flux * disc_fraction).shear(q=q, beta=beta),
                  "disc")]
        for image, fraction, colour in ((arm_image, arm_fraction, "disc"), (knot_image, knot_fraction, "young")):
            interpolated = galsim.InterpolatedImage(galsim.Image(image.astype(np.float64), scale=scale),
                                                    flux=flux * fraction, x_interpolant="linear")
            parts.append((interpolated.shear(q=q, beta=beta), colour))
        return parts, 1.0
    if name == "edge-on":
        bulge_fraction = rng.uniform(0.03, 0.2)
        disc = galsim.InclinedExponential(inclination=rng.uniform(80, 90) * galsim.degrees,
                                          half_light_radius=hlr, scale_h_over_r=rng.uniform(0.06, 0.14),
                                          flux=flux * (1 - bulge_fraction))
        bulge = galsim.Sersic(n=_sersic_index(rng, 1.5, 4.0), half_light_radius=0.2 * hlr,
                              flux=flux * bulge_fraction).shear(q=0.7, beta=0 * galsim.degrees)
        return [(disc, "disc"), (bulge, "old")], 1.0
    # irregular: a few bright clumps on a faint, lopsided disc
    clump_fraction = rng.uniform(0.4, 0.7)
    clumps = galsim.RandomKnots(npoints=int(rng.integers(4, 14)), half_light_radius=hlr,
                                flux=flux * clump_fraction, rng=ud)
    clumps = galsim.Convolve(clumps, galsim.Gaussian(sigma=0.15 * hlr))
    disc = galsim.Exponential(half_light_radius=1.2 * hlr, flux=flux * (1 - clump_fraction))
    disc = disc.shear(q=rng.uniform(0.4, 0.9), beta=0 * galsim.degrees).shift(
        rng.normal(0, 0.25 * hlr), rng.normal(0, 0.25 * hlr))
    return [(clumps, "young"), (disc, "disc")], 1.0


def render_galaxy(name: str, seed: int, row: int, size: int, star_probability: float):
    """Render one galaxy: its RGB image (3, size, size) uint8 and its catalog values."""
    rng = np.random.default_rng([seed, row])
    z = (rng.uniform(0.02**3, 0.1**3)) ** (1 / 3)
    median_kpc, spread = SIZES_KPC[name]
    hlr_kpc = median_kpc * math.exp(rng.normal(0, spread))
    hlr = hlr_kpc / _angular_scale_kpc_per_arcsec(z)  # arcsec
    mag_r = rng.uniform(13.5, 17.5)
    flux = 10 ** (-0.4 * (mag_r - 22.5))  # nanomaggies
    pixscale = max(SDSS_PIXSCALE, 8.0 * hlr / size)
    psf_fwhm = rng.uniform(1.1, 1.8)
    psf = galsim.Kolmogorov(fwhm=psf_fwhm)
    parts, q_total = _components(name, rng, hlr, flux, pixscale)
    position_angle = rng.uniform(0, 180) * galsim.degrees
    jitter = rng.normal(0, 0.3, 2) * pixscale
    per_native_pixel = (SDSS_PIXSCALE / pixscale) ** 2
    bands = np.zeros((3, size, size))
    for profile, colour in parts:
        if q_total < 1.0:
            profile = profile.shear(q=q_total, beta=0 * galsim.degrees)
        profile = profile.rotate(position_angle).shift(*jitter)
        image = galsim.Convolve(profile, psf).drawImage(nx=size, ny=size, scale=pixscale).array
        tint = np.asarray(COLOURS[colour]) * rng.uniform(0.9, 1.1, 3)
        bands += tint[:, None, None] * image[None] * per_native_pixel
    n_stars = 0
    if rng.uniform() < star_probability:
        n_stars = int(rng.integers(1, 4))
        for _ in range(n_stars):
            star_flux = 10 ** (-0.4 * (rng.uniform(15.0, 20.0) - 22.5))
            offset = rng.uniform(-0.45, 0.45, 2) * size * pixscale
            star = galsim.Convolve(galsim.DeltaFunction(flux=star_flux), psf).shift(*offset)
            image = star.drawImage(nx=size, ny=size, scale=pixscale).array
            bands += np.asarray(COLOURS["star"])[:, None, None] * image[None] * per_native_pixel
    noise_scale = min(1.0, SDSS_PIXSCALE / pixscale)  # resampling to coarser pixels averages noise
    for index, band in enumerate(BANDS):
        bands[index] += rng.normal(0, SKY_SIGMA[band] * noise_scale, (size, size))
    g, r, i = bands
    rgb = make_lupton_rgb(i, r, g, minimum=0.0, stretch=LUPTON_STRETCH, Q=LUPTON_Q)
    values = {"redshift": z, "mag_r": mag_r, "half_light_radius_arcsec": hlr, "pixscale": pixscale,
              "psf_fwhm_arcsec": psf_fwhm, "n_stars": n_stars}
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)), values


def _render_chunk(args):
    names, labels, rows, seed, size, star_probability = args
    return [render_galaxy(names[labels[k]], seed, row, size, star_probability) for k, row in enumerate(rows)]


def synthesize(params: SynthParams, workers: int | None = None,
               progress: Callable[[int], None] | None = None) -> Catalog:
    """Render a catalog of simulated galaxies (all cores by default); `progress(n)` is told of each chunk."""
    params.check()
    names, _ = params.class_mix()
    labels = class_labels(params)
    workers = workers or os.cpu_count() or 1
    chunk = 16
    jobs = [(names, labels[start:start + chunk], range(start, min(start + chunk, params.n)), params.seed,
             params.size, params.star_probability) for start in range(0, params.n, chunk)]
    images = np.empty((params.n, 3, params.size, params.size), dtype=np.uint8)
    values: list[dict] = []
    if workers == 1:
        results = map(_render_chunk, jobs)
        executor = None
    else:
        executor = ProcessPoolExecutor(max_workers=workers)
        results = executor.map(_render_chunk, jobs)
    try:
        row = 0
        for result in results:
            for image, galaxy_values in result:
                images[row] = image
                values.append(galaxy_values)
                row += 1
            if progress:
                progress(len(result))
    finally:
        if executor:
            executor.shutdown(cancel_futures=True)
    coords = np.random.default_rng([params.seed, 2**31 + 1])
    table = Table()
    table["objid"] = np.arange(1, params.n + 1, dtype=np.int64)
    table["ra"] = coords.uniform(120.0, 240.0, params.n)
    table["dec"] = np.degrees(np.arcsin(coords.uniform(0.0, math.sin(math.radians(60.0)), params.n)))
    table["label"] = labels
    for key in values[0]:
        table[key] = np.asarray([v[key] for v in values])
    source = "galbench synth " + " ".join(f"{k}={v}" for k, v in asdict(params).items())
    return Catalog(table=table, classes=names, images=images, bands="i,r,g",
                   pixscale=float(np.median(table["pixscale"])), source=source)


def cached_synth_catalog(params: dict, progress_factory=None) -> Path:
    """The cached FITS file of a synth table, generated on first use (keyed by the parameters' hash).

    The seconds the simulation took are kept beside it (`.json`), so a pretraining on it can bill them.
    """
    import time

    from galbench.data.catalog import write_catalog
    from galbench.fileio import cache_entry, write_json_atomic

    path = synth_cache_path(params)
    with cache_entry(path, "cached simulated catalog") as missing:
        if missing:
            synth = SynthParams(**params)
            start = time.perf_counter()
            if progress_factory is None:
                catalog = synthesize(synth)
            else:
                with progress_factory("simulating galaxies", synth.n, "galaxies") as advance:
                    catalog = synthesize(synth, progress=advance)
            write_json_atomic(path.with_suffix(".json"), {"generation_seconds": round(time.perf_counter() - start, 3)})
            write_catalog(path, catalog)
    return path


def synth_cache_path(params: dict) -> Path:
    """Where the cached catalog of a synth table lives."""
    from galbench.fileio import cache_dir, content_hash

    return cache_dir("synth") / f"synth-{content_hash(params)}.fits"


def synth_generation_seconds(params: dict) -> float | None:
    """The seconds the cached catalog of a synth table took to simulate (None where not recorded)."""
    import json

    timing = synth_cache_path(params).with_suffix(".json")
    return json.loads(timing.read_text())["generation_seconds"] if timing.exists() else None
