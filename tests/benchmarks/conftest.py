"""Benchmark fixtures: small, fixed workloads sized for the 2-core CI machine (the whole run under 10 minutes)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch

from galbench.data.catalog import Catalog, write_catalog
from galbench.data.synth import SynthParams, synthesize
from galbench.experiment.runner import cpu_name


def device_name() -> str:
    """The machine a figure was measured on."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{cpu_name()} ({platform.machine()}, {torch.get_num_threads()} threads)"


@pytest.fixture(scope="session")
def sim_images() -> Catalog:
    """600 simulated galaxies at 64 px (3 classes), generated once per benchmark session."""
    return synthesize(SynthParams(n=600, size=64, seed=0), workers=None)


@pytest.fixture(scope="session")
def sim_file(sim_images, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "sim.fits"
    write_catalog(path, sim_images)
    return path


def record(benchmark, **figures) -> None:
    """Put domain figures (images/s, ratios, device) into the benchmark's extra_info."""
    benchmark.extra_info.update({"device": device_name(), **figures})
