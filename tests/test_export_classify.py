"""ONNX export and classification: metadata, parity, providers, resume, bad input, real galaxies."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from galbench.data.catalog import Catalog, read_catalog, write_catalog
from galbench.errors import GalbenchError
from galbench.inference.classify import classify, provider_options
from galbench.inference.export import read_metadata
from galbench.models.weights import load_checkpoint

classify_module = importlib.import_module("galbench.inference.classify")


@pytest.fixture(scope="module")
def winner(finished_suite) -> Path:
    return finished_suite / "export" / "winner.onnx"


@pytest.fixture(scope="module")
def sim_catalog(finished_suite, tmp_path_factory) -> Path:
    """A fresh catalog of 300 simulated galaxies with the suite's classes (not seen in training)."""
    from galbench.data.synth import SynthParams, synthesize

    path = tmp_path_factory.mktemp("sim") / "fresh.fits"
    write_catalog(path, synthesize(SynthParams(n=300, size=64, seed=99, classes="elliptical,spiral,edge-on"),
                                   workers=1))
    return path


def test_run_exports_each_variant_and_the_winner_with_metadata(finished_suite, winner):
    exports = json.loads((finished_suite / "export" / "exports.json").read_text())
    assert set(exports) == {"scratch", "faster", "winner"}
    meta = read_metadata(winner)
    assert meta["classes"] == ["elliptical", "spiral", "edge-on"] and meta["input_size"] == 64 and meta["crop"] == 1.0
    chosen = exports["winner"]
    checkpoint = finished_suite / "runs" / f"{chosen['variant']}__seed{chosen['seed']}" / "best.pt"
    from galbench.fileio import file_sha256

    assert meta["checkpoint_sha256"] == file_sha256(checkpoint) == file_sha256(winner.with_suffix(".pt"))
    assert meta["suite"] == "finished" and meta["seed"] == str(chosen["seed"])
    assert float(meta["parity_max_abs_logit_difference"]) < 1e-3 and meta["parity_argmax_agreement"] == "1.0000"
    assert chosen["best_val_accuracy"] == max(v["best_val_accuracy"] for v in exports.values())


def test_cli_export_of_a_checkpoint(cli, finished_suite, tmp_path):
    out = tmp_path / "m.onnx"
    code, stdout, err = cli("export", finished_suite / "runs/scratch__seed0/best.pt", out, "--parity-images", 8)
    assert code == 0, err
    assert "argmax agreement 1.0000" in err and out.exists() and out.with_suffix(".pt").exists()


def test_onnxruntime_and_torch_agree_on_every_argmax(winner, sim_catalog):
    onnx_table = classify(sim_catalog, model=winner, backend="onnxruntime")
    torch_table = classify(sim_catalog, model=winner, backend="torch")
    assert (onnx_table["pred_label"] == torch_table["pred_label"]).all()
    assert onnx_table.meta["BACKEND"] == "onnxruntime" and torch_table.meta["BACKEND"] == "torch"
    probs = np.stack([onnx_table[c] for c in onnx_table.colnames if c.startswith("prob_")], 1)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


def test_classify_output_file_keeps_columns_and_adds_predictions(cli, winner, sim_catalog, tmp_path):
    out = tmp_path / "out.fits"
    code, _, err = cli("classify", sim_catalog, "--model", winner, "--out", out, "--batch-size", 64)
    assert code == 0, err
    result = read_catalog(out, require_images=False)
    source = read_catalog(sim_catalog)
    assert result.images is None  # images are not copied unless asked
    assert list(result.table["objid"]) == list(source.table["objid"])
    for column in ("ra", "dec", "label", "redshift", "pred_label", "pred_class", "prob_elliptical", "prob_edge_on",
                   "pred_confidence"):
        assert column in result.table.colnames, column
    from astropy.io import fits

    header = fits.getheader(out, "CATALOG")
    assert header["BACKEND"] == "onnxruntime" and header["GAL_PER_S"] > 0 and len(header["MODELSHA"]) == 64
    # the model learnt something: better than chance on unseen simulated galaxies
    assert (result.table["pred_label"] == result.table["label"]).mean() > 0.4


def test_python_api_returns_an_astropy_table(winner, sim_catalog):
    import galbench

    table = galbench.classify(sim_catalog, model=winner)
    assert len(table) == 300 and "pred_class" in table.colnames


def test_resume_reuses_finished_chunks_and_matches(monkeypatch, winner, sim_catalog, tmp_path):
    monkeypatch.setattr(classify_module, "CHUNK_ROWS", 100)
    whole = classify(sim_catalog, model=winner, out=tmp_path / "whole.fits", batch_size=50)
    out = tmp_path / "resumed.fits"
    seen = []

    def interrupt(n):
        seen.append(n)
        if sum(seen) >= 250:  # inside the third chunk of 100 rows
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        classify(sim_catalog, model=winner, out=out, batch_size=50, progress=interrupt)
    assert not out.exists()
    partial = Path(str(out) + ".partial")
    assert sorted(p.name for p in partial.glob("rows_*.npz")) == ["rows_000000000000.npz", "rows_000000000100.npz"]
    calls = []
    original = classify_module.OnnxRuntimeBackend.__call__
    monkeypatch.setattr(classify_module.OnnxRuntimeBackend, "__call__",
                        lambda self, images: calls.append(len(images)) or original(self, images))
    resumed = classify(sim_catalog, model=winner, out=out, batch_size=50, resume=True)
    assert sum(calls) == 100  # only the last chunk was computed again
    assert (resumed["pred_label"] == whole["pred_label"]).all() and not partial.exists()


def test_finished_image_pages_are_released_in_runs_counted_in_catalog_rows(monkeypatch, winner, tmp_path):
    """Catalog rows larger than the model's input (96 px for a 64 px model): the runs of released pages are
    measured in the catalog's bytes, which are what stays mapped."""
    from galbench.data.synth import SynthParams, synthesize

    path = tmp_path / "large.fits"
    write_catalog(path, synthesize(SynthParams(n=120, size=96, seed=5, classes="elliptical,spiral,edge-on"),
                                   workers=1))
    row_bytes = 3 * 96 * 96
    monkeypatch.setattr(classify_module, "RELEASE_BYTES", 25 * row_bytes)
    monkeypatch.setattr(classify_module, "CHUNK_ROWS", 100)
    released = []
    monkeypatch.setattr(classify_module, "release_pages", lambda images, start, stop: released.append((start, stop)))
    classify(path, model=winner, batch_size=10)
    assert released[0][0] == 0 and released[-1][1] == 120
    assert all(a[1] == b[0] for a, b in zip(released, released[1:], strict=False))  # every row, once, in order
    for start, stop in released:
        if stop not in (100, 120):  # the end of a chunk releases what is left
            assert 25 <= stop - start < 25 + 10, (start, stop)


@pytest.mark.parametrize("lanes", [1, 3])
def test_a_catalog_at_the_models_size_is_fed_from_its_memory_map_in_the_calling_thread(monkeypatch, winner,
                                                                                       sim_catalog, lanes):
    """No copy, and no prefetch thread to take a core from the backend; the rows are still released, and never
    while a batch that reads them is running (3 lanes: three batches at once)."""
    import mmap
    import threading
    import time

    def memory_mapped(array):
        while array is not None and not isinstance(array, mmap.mmap):
            array = getattr(array, "base", None)
        return array is not None

    fed, released, threads, running, overlaps, peak = [], [], [], set(), [], [0]
    lock = threading.Lock()
    original = classify_module.OnnxRuntimeBackend.__call__

    def call(self, images):
        span = (images.ctypes.data, images.ctypes.data + images.nbytes)
        with lock:
            fed.append(images)
            running.add(span)
            peak[0] = max(peak[0], len(running))
        try:
            time.sleep(0.05)  # long enough for the other lanes' batches to start
            return original(self, images)
        finally:
            with lock:
                running.discard(span)

    def release(images, start, stop):
        low, high = images.ctypes.data + start * images[0].nbytes, images.ctypes.data + stop * images[0].nbytes
        with lock:
            overlaps.extend(span for span in running if span[0] < high and low < span[1])
        released.append((start, stop))

    monkeypatch.setattr(classify_module, "cpu_lanes", lambda providers, precision: lanes)
    monkeypatch.setattr(classify_module.OnnxRuntimeBackend, "__call__", call)
    monkeypatch.setattr(classify_module, "RELEASE_BYTES", 1)  # a release after every batch
    monkeypatch.setattr(classify_module, "release_pages", release)
    batch = classify_module._Source.batch
    monkeypatch.setattr(classify_module._Source, "batch",
                        lambda self, start, stop: threads.append(threading.current_thread()) or batch(self, start, stop))
    table = classify(sim_catalog, model=winner, batch_size=64)
    assert len(fed) == 5 and all(memory_mapped(images) for images in fed)
    assert set(threads) == {threading.main_thread()}
    assert released == [(0, 64), (64, 128), (128, 192), (192, 256), (256, 300)] and not overlaps
    assert peak[0] == lanes  # that many batches did run at once
    assert table.meta["PROVIDRS"] == "CPUExecutionProvider"


def test_int8_models_run_a_batch_per_core_on_the_cpu_and_fp32_models_one_batch(monkeypatch):
    """int8 convolutions in ONNX Runtime wait for the session's threads after every image: on the CPU, an int8
    session runs single-threaded, a batch per usable core at once (capped); fp32 and GPU sessions one batch."""
    monkeypatch.setattr(classify_module.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert classify_module.cpu_lanes(["CPUExecutionProvider"], "int8") == 3
    assert classify_module.cpu_lanes(["CPUExecutionProvider"], "fp32") == 1
    assert classify_module.cpu_lanes(["CUDAExecutionProvider", "CPUExecutionProvider"], "int8") == 1
    monkeypatch.setattr(classify_module.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert classify_module.cpu_lanes(["CPUExecutionProvider"], "int8") == classify_module.MAX_LANES
    assert classify_module.session_options(["CPUExecutionProvider"], 1).intra_op_num_threads == 1
    assert classify_module.session_options(["CPUExecutionProvider"]).intra_op_num_threads == 0  # ORT's choice


def test_in_order_runs_its_lanes_at_once_and_yields_in_order():
    import threading
    import time

    barrier = threading.Barrier(3, timeout=30)  # passes only if three items run at the same time
    drawn, finished, unfinished_at_draw = [], set(), []

    def items():
        for item in range(9):
            unfinished_at_draw.append(len(drawn) - len(finished))
            drawn.append(item)
            yield item

    def work(item):
        if item < 3:
            barrier.wait()
        time.sleep(0.01 * (9 - item))  # later items finish first
        finished.add(item)
        return item * item

    results = list(classify_module.in_order(work, items(), 3))
    assert results == [(item, item * item) for item in range(9)]
    assert max(unfinished_at_draw) <= 2  # a lane is free before the next item is drawn
    assert list(classify_module.in_order(work, iter([5, 7]), 1)) == [(5, 25), (7, 49)]
    with pytest.raises(ZeroDivisionError):
        list(classify_module.in_order(lambda item: 1 // item, iter([3, 2, 0, 1]), 2))


def test_a_bad_catalog_is_refused_without_waiting_for_the_backend(monkeypatch, winner, tmp_path):
    """The session is built while the catalog is read; an unusable catalog is said at once all the same."""
    import threading
    import time

    from astropy.table import Table

    bad = tmp_path / "no-images.fits"
    Table({"ra": [1.0, 2.0], "dec": [0.0, 0.5]}).write(bad)
    building = threading.Event()
    finish = threading.Event()
    original = classify_module.choose_backend

    def slow_backend(*args, **kwargs):
        building.set()
        finish.wait(60)  # a first TensorRT engine build, say
        return original(*args, **kwargs)

    monkeypatch.setattr(classify_module, "choose_backend", slow_backend)
    started = time.monotonic()
    try:
        with pytest.raises(GalbenchError, match="no IMAGES HDU and no image_path column"):
            classify(bad, model=winner)
        assert building.is_set() and time.monotonic() - started < 30  # not the 60 s the build would take
    finally:
        finish.set()


def test_cpu_sessions_plan_no_memory_pattern():
    """The pattern costs a session's second batch a fresh allocation and buys the CPU nothing; GPUs keep it."""
    assert not classify_module.session_options(["CPUExecutionProvider"]).enable_mem_pattern
    assert classify_module.session_options(["CUDAExecutionProvider", "CPUExecutionProvider"]).enable_mem_pattern


def test_provider_options_in_order_of_speed_with_trt_profiles(tmp_path):
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = provider_options(everything, tmp_path / "engines", batch_size=512, input_size=224)
    assert [name for name, _ in chosen] == everything
    trt = chosen[0][1]
    assert trt["trt_fp16_enable"] and trt["trt_engine_cache_enable"]
    assert trt["trt_engine_cache_path"] == str(tmp_path / "engines")
    assert trt["trt_profile_min_shapes"] == "images:1x3x224x224"
    assert trt["trt_profile_opt_shapes"] == trt["trt_profile_max_shapes"] == "images:512x3x224x224"
    assert [n for n, _ in provider_options(["CPUExecutionProvider", "AzureExecutionProvider"], tmp_path, 8, 64)] == \
        ["CPUExecutionProvider"]


def _error(cli, *args):
    code, _, err = cli(*args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_bad_inputs_give_one_line_and_write_nothing(cli, winner, sim_catalog, tmp_path, finished_suite):
    out = tmp_path / "never.fits"
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage" * 100)
    assert "not a readable ONNX model" in _error(cli, "classify", sim_catalog, "--model", corrupt, "--out", out)
    foreign = tmp_path / "foreign.onnx"
    import onnx

    proto = onnx.load(str(winner))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    assert "lacks galbench metadata" in _error(cli, "classify", sim_catalog, "--model", foreign, "--out", out)
    other = tmp_path / "other-classes.fits"
    catalog = read_catalog(sim_catalog)
    write_catalog(other, Catalog(catalog.table, ["round", "disc", "thin"], np.asarray(catalog.images)))
    assert "do not match the model's" in _error(cli, "classify", other, "--model", winner, "--out", out)
    bare = tmp_path / "bare.fits"
    write_catalog(bare, Catalog(catalog.table, catalog.classes), include_images=False)
    assert "no IMAGES HDU and no image_path column" in _error(cli, "classify", bare, "--model", winner, "--out", out)
    assert "must differ from the input" in _error(cli, "classify", sim_catalog, "--model", winner, "--out", sim_catalog)
    assert "exactly one of --model" in _error(cli, "classify", sim_catalog, "--out", out)
    assert not out.exists()


def test_image_path_catalogs_with_a_bad_row(cli, winner, gz1_small, tmp_path):
    from astropy.table import Table

    images = sorted((gz1_small / "images").iterdir())[:6]
    images[2].write_bytes(b"<html>error page</html>")
    table = Table({"objid": np.arange(6, dtype=np.int64), "image_path": [f"images/{p.name}" for p in images]})
    catalog_file = gz1_small / "paths.fits"
    write_catalog(catalog_file, Catalog(table, ["elliptical", "spiral", "edge-on"]), include_images=False)
    out = tmp_path / "paths.out.fits"
    err = _error(cli, "classify", catalog_file, "--model", winner, "--out", out)
    assert "row 2 (objid 2)" in err and images[2].name in err and not out.exists()
    code, _, err = cli("classify", catalog_file, "--model", winner, "--out", out, "--skip-bad")
    assert code == 0, err
    result = read_catalog(out, require_images=False).table
    assert list(result["bad_image"]) == [False, False, True, False, False, False]
    assert result["pred_label"][2] == -1 and (result["pred_label"][[0, 1, 3, 4, 5]] >= 0).all()


def test_real_gz1_model_classifies_held_out_rows_with_the_suites_test_accuracy(cli, gz1_dir, tmp_path):
    from tests.conftest import write_suite

    source = tmp_path / "gz1.fits"
    code, _, err = cli("data", "import", gz1_dir, source, "--class-column", "gz1_class", "--map", "elliptical=0",
                       "--map", "spiral=1,2", "--map", "edge-on=3", "--crop", "0.5", "--size", "64")
    assert code == 0, err
    suite = write_suite(tmp_path, name="gz1", seeds=1, epochs=2, data=f'catalog = "{source}"')
    out = tmp_path / "run"
    assert cli("run", suite, "--out", out, "--no-report")[0] == 0
    split = json.loads((out / "split.json").read_text())
    catalog = read_catalog(source)
    test_rows = np.asarray(split["test"])
    held_out = tmp_path / "held_out.fits"
    write_catalog(held_out, Catalog(catalog.table[test_rows], catalog.classes, np.asarray(catalog.images[test_rows])))
    assert cli("classify", held_out, "--run", out, "--out", tmp_path / "pred.fits")[0] == 0
    predicted = read_catalog(tmp_path / "pred.fits", require_images=False).table
    accuracy = float((predicted["pred_label"] == predicted["label"]).mean())
    result = json.loads((out / "results.json").read_text())["runs"][0]
    assert load_checkpoint(out / "export" / "winner.pt")["meta"]["seed"] == 0
    assert accuracy == pytest.approx(result["test_accuracy"], abs=1e-6)


def test_fp16_export_has_its_own_parity_figures_and_classifies(cli, finished_suite, sim_catalog, tmp_path):
    pytest.importorskip("onnxconverter_common", reason="onnxconverter-common (the fp16 extra) is not installed")
    out = tmp_path / "half.onnx"
    code, stdout, err = cli("export", finished_suite / "runs/scratch__seed0/best.pt", out, "--fp16",
                            "--data", sim_catalog)
    assert code == 0, err
    import onnx

    meta = read_metadata(out)
    assert meta["precision"] == "fp16" and float(meta["parity_argmax_agreement"]) >= 0.99
    assert 0 < float(meta["parity_max_abs_logit_difference"]) <= 0.05
    weights = onnx.load(str(out)).graph.initializer
    assert any(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    half = classify(sim_catalog, model=out, backend="onnxruntime")
    full = classify(sim_catalog, model=_export_fp32(cli, finished_suite, tmp_path), backend="onnxruntime")
    assert (half["pred_label"] == full["pred_label"]).mean() >= 0.99


def _export_fp32(cli, finished_suite, tmp_path):
    path = tmp_path / "full.onnx"
    assert cli("export", finished_suite / "runs/scratch__seed0/best.pt", path, "--parity-images", 8)[0] == 0
    return path
