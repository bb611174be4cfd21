"""Shared fixtures: small catalogs, the shared real sample, and a CLI runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from galbench.cli import main
from galbench.data.catalog import Catalog, write_catalog

GZ1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gz1-sdss"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GALBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "galbench-cache"))


@pytest.fixture
def gz1_dir() -> Path:
    """The shared Galaxy Zoo 1 sample; tests that need it skip with the reason where it is absent."""
    if not (GZ1 / "labels.csv").exists():
        pytest.skip(f"the shared GZ1 sample is not at {GZ1}")
    return GZ1


@pytest.fixture
def gz1_small(gz1_dir, tmp_path) -> Path:
    """A copy of 30 real GZ1 images (10 per class 0, 1-2, 3) with their labels CSV."""
    lines = (gz1_dir / "labels.csv").read_text().splitlines()
    header, rows = lines[0], [line.split(",") for line in lines[1:]]
    chosen = []
    for wanted in (("0",), ("1", "2"), ("3",)):
        chosen += [r for r in rows if r[1] in wanted][:10]
    folder = tmp_path / "gz1-small"
    (folder / "images").mkdir(parents=True)
    for objid, _ in chosen:
        shutil.copy(gz1_dir / "images" / f"{objid}.jpeg", folder / "images" / f"{objid}.jpeg")
    (folder / "labels.csv").write_text("\n".join([header] + [",".join(r) for r in chosen]) + "\n")
    return folder


def make_catalog(n: int = 12, size: int = 32, classes=("a", "b", "c"), seed: int = 0) -> Catalog:
    """A small random catalog with images, balanced labels and coordinates."""
    rng = np.random.default_rng(seed)
    table = Table()
    table["objid"] = np.arange(n, dtype=np.int64) + 100
    table["ra"] = rng.uniform(0, 360, n)
    table["dec"] = rng.uniform(-30, 60, n)
    table["label"] = (np.arange(n) % len(classes)).astype(np.int16)
    table["extra"] = rng.normal(size=n)
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    return Catalog(table=table, classes=list(classes), images=images, bands="i,r,g", pixscale=0.396, source="test")


@pytest.fixture
def small_catalog_file(tmp_path) -> Path:
    path = tmp_path / "small.fits"
    write_catalog(path, make_catalog())
    return path


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*argv):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


TINY_SUITE = """
[suite]
name = "{name}"
seeds = {seeds}
thresholds = [0.4, 0.6, 0.99]

[data]
{data}
image_size = 64
split = {{ train = 0.6, val = 0.2, test = 0.2, seed = 0 }}

[train]
optimizer = "adamw"
lr = 0.002
weight_decay = 0.01
batch_size = 16
epochs = {epochs}
evals_per_epoch = 2
device = "cpu"

[[variant]]
name = "scratch"
model = "alexnet-tiny"
init = "scratch"
{extra}
"""


def write_suite(folder: Path, name="tiny", seeds=2, epochs=2, data=None, extra="") -> Path:
    """A small CPU suite file: alexnet-tiny on 90 simulated galaxies unless `data` says otherwise."""
    data = data or 'synth = { n = 90, size = 64, seed = 0, classes = "elliptical,spiral,edge-on" }'
    path = folder / f"{name}.toml"
    path.write_text(TINY_SUITE.format(name=name, seeds=seeds, epochs=epochs, data=data, extra=extra))
    return path


@pytest.fixture(scope="session")
def finished_suite(tmp_path_factory) -> Path:
    """A finished run directory: 2 variants x 3 seeds of alexnet-tiny on simulated galaxies (CPU, ~1 minute)."""
    import os

    folder = tmp_path_factory.mktemp("finished-suite")
    os.environ["GALBENCH_CACHE"] = str(tmp_path_factory.getbasetemp() / "galbench-cache")
    extra = '\n[[variant]]\nname = "faster"\nmodel = "alexnet-tiny"\ninit = "scratch"\ntrain = { lr = 0.004 }\n'
    data = 'synth = { n = 300, size = 64, seed = 0, classes = "elliptical,spiral,edge-on" }'
    suite = write_suite(folder, name="finished", seeds=3, epochs=4, data=data, extra=extra)
    out = folder / "run"
    assert main(["run", str(suite), "--out", str(out), "--no-report"]) == 0
    return out


@pytest.fixture(scope="session")
def finished_suite_images(finished_suite):
    """The finished suite's catalog images and labels (all rows), and its split (split.json)."""
    import json

    from galbench.data.catalog import read_catalog

    resolved = json.loads((finished_suite / "suite.resolved.json").read_text())
    split = json.loads((finished_suite / "split.json").read_text())
    catalog = read_catalog(resolved["catalog_path"])
    return np.asarray(catalog.images), catalog.labels, split
