"""Fractals at FractalDB's published scale: its recipe, its presets, and generation that streams to disk."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from astropy.table import Table

from galbench.data import fractal
from galbench.data.catalog import read_catalog, write_catalog_stream
from galbench.data.fractal import FractalParams, fractaldb_systems, generate, generate_to_file, render_blocks
from galbench.errors import GalbenchError
from galbench.experiment.suite import FRACTAL_PRESETS, FractalSection
from galbench.models.weights import load_checkpoint

FDB = dict(recipe="fractaldb", size=64, seed=3)


def _paper_fill(system: np.ndarray, probabilities: np.ndarray, points: int = 100_000, seed: int = 0) -> float:
    """The filling rate as FractalDB's ifs_search.py measures it: one chain from (0, 0), every point drawn,
    each axis stretched to [6, 506] of a 512 px image (written independently of galbench's vectorised code)."""
    rng = np.random.default_rng(seed)
    choice = rng.choice(len(system), size=points, p=probabilities)
    xs, ys = np.empty(points), np.empty(points)
    x = y = 0.0
    for step, k in enumerate(choice):
        a, b, c, d, e, f = system[k]
        x, y = a * x + b * y + e, c * x + d * y + f
        xs[step], ys[step] = x, y
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep] - xs[keep].min(), ys[keep] - ys[keep].min()
    column = (xs / (xs.max() - xs.min()) * 500 + 6).astype(int)
    row = (ys / (ys.max() - ys.min()) * 500 + 6).astype(int)
    image = np.zeros((512, 512), dtype=bool)
    image[row, column] = True
    return float(image.mean())


def test_fractaldb_categories_follow_the_published_search():
    found = fractaldb_systems(FractalParams(classes=2, per_class=4, **FDB))
    assert len(found) == 2
    for system, probabilities in found:
        used = probabilities > 0
        assert 2 <= used.sum() <= 7 and not system[~used].any()
        assert np.abs(system[used]).max() <= 1.0
        det = np.abs(system[used, 0] * system[used, 3] - system[used, 1] * system[used, 2])
        np.testing.assert_allclose(probabilities[used], det / det.sum())
        # an independent, point-by-point measurement agrees that the attractor fills 20% of the frame
        assert _paper_fill(system[used], probabilities[used]) >= 0.19
    # and the search rejects what fails it: a sparse dust (three maps shrinking by 0.3)
    dust = np.array([[0.3, 0, 0, 0.3, 0, 0], [0.3, 0, 0, 0.3, 0.7, 0], [0.3, 0, 0, 0.3, 0, 0.7]])
    third = np.full(3, 1 / 3)
    assert _paper_fill(dust, third) < 0.2
    assert fractal.fractaldb_fill(dust[None], third[None], np.random.default_rng(0))[0] < 0.2


def test_fractaldb_instances_are_weightings_patch_renderings_and_flips():
    images = generate(FractalParams(classes=2, per_class=12, **FDB), workers=1).images
    first = images[:12]
    # instances 0-3 are the four flips of one rendering: none, top-bottom, left-right, both
    np.testing.assert_array_equal(first[1], first[0][:, ::-1, :])
    np.testing.assert_array_equal(first[2], first[0][:, :, ::-1])
    np.testing.assert_array_equal(first[3], first[0][:, ::-1, ::-1])
    # instance 4 is the next weighting (parameter a of every map times 0.8): another shape
    assert not np.array_equal(first[4], first[0])
    assert len({image.tobytes() for image in first}) == 12
    # grey, as FractalDB-1k (patch_gray): equal bands, at most grey 127, patchy (not saturated) inside
    assert (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all()
    assert images.max() <= 127 and images.max() > 40
    assert len(fractal.FRACTALDB_WEIGHTS) == 25
    assert {tuple(w) for w in fractal.FRACTALDB_WEIGHTS[1:]} == {
        tuple(np.where(np.arange(6) == p, w, 1.0)) for p in range(6) for w in (0.8, 0.9, 1.1, 1.2)}


def test_patches_paste_later_points_on_top():
    # two points whose patches overlap: the later point's patch wins where they overlap, zeros included
    flat = np.array([[10 * 20 + 10, 10 * 20 + 11]])  # (row 10, col 10) then (row 10, col 11), a 20 px canvas
    finite = np.ones_like(flat, dtype=bool)
    patterns = np.array([[0b111111111, 0b000000001]])  # full patch, then only the bottom-right bit
    canvas = fractal._fractaldb_patches(flat, finite, patterns, 20)[0]
    # the first patch covers rows 11-13, columns 11-13; the second rows 11-13, columns 12-14
    assert canvas[11:14, 11].tolist() == [1, 1, 1]  # only under the first patch
    assert canvas[11:14, 12:14].tolist() == [[0, 0], [0, 0], [0, 0]]  # the second patch's zeros cover the first
    assert canvas[13, 14] == 1 and canvas.sum() == 4


def test_fractal_sets_are_the_same_whatever_the_workers():
    params = FractalParams(classes=2, per_class=4, **FDB)
    np.testing.assert_array_equal(generate(params, workers=1).images, generate(params, workers=2).images)


def _peak_bytes(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_generation_streams_category_by_category_with_flat_memory(tmp_path):
    small, large = (FractalParams(classes=classes, per_class=16, size=64, seed=0) for classes in (4, 32))
    blocks = list(render_blocks(small, workers=1))
    assert [block.shape for block in blocks] == [(16, 3, 64, 64)] * 4
    path = generate_to_file(small, tmp_path / "small.fits", workers=1)
    np.testing.assert_array_equal(read_catalog(path).images, np.concatenate(blocks))
    assert read_catalog(path).class_counts() == {f"ifs{k:03d}": 16 for k in range(4)}
    # eight times the images: in memory they add their bytes to the peak, streamed to a file they add nothing
    image_bytes = 32 * 16 * 3 * 64 * 64
    streamed = [_peak_bytes(lambda p=p: generate_to_file(p, tmp_path / "x.fits", workers=1)) for p in (small, large)]
    in_memory = _peak_bytes(lambda: generate(large, workers=1))
    assert streamed[1] - streamed[0] < 0.1 * image_bytes
    assert in_memory - streamed[1] > 0.9 * image_bytes


def test_streamed_writes_need_exactly_one_image_per_row(tmp_path):
    table = Table({"objid": np.arange(4), "label": np.zeros(4, dtype=np.int16)})
    block = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    for blocks in ([block], [block] * 3, [np.zeros((2, 3, 8, 9), dtype=np.uint8)]):
        with pytest.raises(GalbenchError):
            write_catalog_stream(tmp_path / "bad.fits", table, ["a"], (3, 8, 8), iter(blocks))
        assert not (tmp_path / "bad.fits").exists()
    write_catalog_stream(tmp_path / "ok.fits", table, ["a"], (3, 8, 8), iter([block, block + 7]))
    images = read_catalog(tmp_path / "ok.fits").images
    assert images.shape == (4, 3, 8, 8) and images[2:].min() == 7 and images[:2].max() == 0


def test_presets_fill_what_a_fractal_table_leaves_out():
    default = FractalSection()
    assert (default.preset, default.classes, default.per_class, default.recipe, default.epochs) == \
        ("cpu", 32, 64, "galbench", 8)
    fdb = FractalSection(preset="fractaldb-1k")
    assert (fdb.classes, fdb.per_class, fdb.recipe, fdb.epochs, fdb.batch_size) == (1000, 1000, "fractaldb", 90, 256)
    scaled = FractalSection.model_validate({"preset": "fractaldb-1k", "classes": 10, "per_class": 40})
    assert (scaled.classes, scaled.per_class, scaled.recipe) == (10, 40, "fractaldb")
    assert set(FRACTAL_PRESETS) == {"cpu", "fractaldb-1k"}
    with pytest.raises(ValueError):
        FractalSection.model_validate({"preset": "fractaldb-10k"})


def test_fractaldb_preset_pretrains_with_the_published_augmentation_and_reuses_its_set(cli, tmp_path):
    from galbench.experiment.pretrain import fractal_augment

    assert fractal_augment(FractalParams(recipe="fractaldb", size=64)).model_dump() == \
        {"flips": False, "rot90": False, "shift": 4}
    assert fractal_augment(FractalParams()).model_dump() == {"flips": True, "rot90": True, "shift": 2}
    args = ["--preset", "fractaldb-1k", "--classes", 2, "--per-class", 20, "--epochs", 1, "--batch-size", 8,
            "--model", "alexnet-tiny", "--device", "cpu"]
    code, _, err = cli("pretrain", "fractal", tmp_path / "a.pt", *args)
    assert code == 0, err
    first = load_checkpoint(tmp_path / "a.pt")["meta"]
    assert first["pretrain_source"]["recipe"] == "fractaldb" and first["pretrain_source"]["per_class"] == 20
    assert first["pretrain_cost"]["generation_seconds"] > 0
    assert cli("pretrain", "fractal", tmp_path / "b.pt", *args)[0] == 0
    # the set was generated once: the second pretraining reports the same generation cost
    second = load_checkpoint(tmp_path / "b.pt")["meta"]
    assert second["pretrain_cost"]["generation_seconds"] == first["pretrain_cost"]["generation_seconds"]
