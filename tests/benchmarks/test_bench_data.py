"""Data benchmarks: simulated galaxies, fractals, image import, FITS read throughput."""

from __future__ import annotations

import shutil

import numpy as np

from galbench.data.catalog import read_catalog
from galbench.data.fractal import FractalParams, generate
from galbench.data.importers import import_folder_csv, parse_class_map
from galbench.data.synth import SynthParams, synthesize
from tests.benchmarks.conftest import record


def test_synth_galaxies(benchmark):
    params = SynthParams(n=400, size=64, seed=1)
    benchmark.group = "simulated galaxies"
    benchmark.pedantic(synthesize, args=(params,), rounds=2, iterations=1, warmup_rounds=0)
    record(benchmark, images_per_second=params.n / benchmark.stats.stats.median)


def test_fractal_generation(benchmark):
    params = FractalParams(classes=16, per_class=64, size=64, seed=1)
    benchmark.group = "fractal generation"
    benchmark.pedantic(generate, args=(params,), rounds=3, iterations=1)
    record(benchmark, images_per_second=params.classes * params.per_class / benchmark.stats.stats.median)


def test_import_real_images(benchmark, gz1_dir, tmp_path):
    folder = tmp_path / "gz1"
    (folder / "images").mkdir(parents=True)
    lines = (gz1_dir / "labels.csv").read_text().splitlines()[:301]
    for line in lines[1:]:
        objid = line.split(",")[0]
        shutil.copy(gz1_dir / "images" / f"{objid}.jpeg", folder / "images" / f"{objid}.jpeg")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    mapping = parse_class_map(["elliptical=0", "spiral=1,2", "edge-on=3", "other=4,5"])
    benchmark.group = "image import"
    catalog, _ = benchmark.pedantic(import_folder_csv, args=(folder, None, "gz1_class", mapping),
                                    kwargs={"crop": 0.5, "size": 64}, rounds=3, iterations=1)
    record(benchmark, images_per_second=len(catalog) / benchmark.stats.stats.median)


def test_fits_read_throughput(benchmark, sim_file):
    def read_all():
        images = read_catalog(sim_file).images
        return int(np.asarray(images).sum(dtype=np.int64))  # touch every byte

    benchmark.group = "FITS read"
    benchmark.pedantic(read_all, rounds=5, iterations=1, warmup_rounds=1)
    size = read_catalog(sim_file).images.nbytes
    record(benchmark, megabytes_per_second=size / 1e6 / benchmark.stats.stats.median)
