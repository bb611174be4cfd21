"""Simulated galaxies: determinism, class mix, plausible images."""

from __future__ import annotations

import numpy as np
import pytest

from galbench.data.catalog import read_catalog
from galbench.data.synth import SynthParams, class_labels, synthesize
from galbench.errors import GalbenchError


def test_same_arguments_give_byte_identical_files_whatever_the_workers(cli, tmp_path):
    a, b = tmp_path / "a.fits", tmp_path / "b.fits"
    assert cli("data", "synth", a, "--n", 40, "--size", 48, "--seed", 3, "--workers", 1)[0] == 0
    assert cli("data", "synth", b, "--n", 40, "--size", 48, "--seed", 3, "--workers", 2)[0] == 0
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c.fits"
    cli("data", "synth", c, "--n", 40, "--size", 48, "--seed", 4, "--workers", 1)
    assert c.read_bytes() != a.read_bytes()


def test_class_mix_is_exact_and_weighted():
    labels = class_labels(SynthParams(n=10, classes="elliptical:3,spiral:1,edge-on:1"))
    assert np.bincount(labels).tolist() == [6, 2, 2]


def test_unknown_class_is_rejected_with_the_choices():
    with pytest.raises(GalbenchError, match="choose from elliptical, lenticular"):
        SynthParams(classes="elliptical,blob").check()


def test_every_class_renders_a_centred_galaxy_above_the_sky():
    catalog = synthesize(SynthParams(n=25, size=64, classes="elliptical,lenticular,spiral,edge-on,irregular",
                                     star_probability=0.0), workers=1)
    images = catalog.images.astype(float)
    centre = images[:, :, 24:40, 24:40].mean(axis=(1, 2, 3))
    corner = images[:, :, :8, :8].mean(axis=(1, 2, 3))
    assert (centre > corner + 10).all()
    assert set(catalog.table.colnames) >= {"objid", "ra", "dec", "label", "redshift", "mag_r", "pixscale"}
    assert (catalog.table["pixscale"] >= 0.396).all()
    assert ((catalog.table["redshift"] > 0.02) & (catalog.table["redshift"] < 0.1)).all()


def test_colours_separate_ellipticals_from_spirals():
    # Ellipticals are redder than spirals: mean R/B ratio over the galaxy (SDSS i->R, g->B)
    catalog = synthesize(SynthParams(n=40, size=64, classes="elliptical,spiral", star_probability=0.0), workers=1)
    images = catalog.images.astype(float)[:, :, 20:44, 20:44]
    redness = images[:, 0].mean(axis=(1, 2)) / (images[:, 2].mean(axis=(1, 2)) + 1)
    labels = catalog.labels
    assert redness[labels == 0].mean() > redness[labels == 1].mean()


def test_synth_file_reads_back_and_info_reports_counts(cli, tmp_path):
    path = tmp_path / "s.fits"
    cli("data", "synth", path, "--n", 12, "--size", 32, "--classes", "elliptical,spiral")
    catalog = read_catalog(path)
    assert catalog.images.shape == (12, 3, 32, 32)
    code, out, _ = cli("data", "info", path)
    assert code == 0 and "elliptical: 6" in out and "spiral: 6" in out and "12 x 3 x 32 x 32" in out
