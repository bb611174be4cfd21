"""int8 export: QDQ static quantisation that ships only through the accuracy and agreement gate."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from galbench.errors import GalbenchError
from galbench.inference.export import export_onnx, read_metadata


def test_cli_int8_export_passes_the_gate_and_classifies(cli, finished_suite, tmp_path, monkeypatch):
    out = tmp_path / "int8.onnx"
    code, stdout, err = cli("export", finished_suite / "runs" / "scratch__seed0" / "best.pt", out,
                            "--run", finished_suite, "--int8")
    assert code == 0, err
    meta = read_metadata(out)
    gate = json.loads(meta["quantization"])
    assert meta["precision"] == "int8" and gate["format"] == "QDQ"
    assert abs(gate["val_accuracy_int8"] - gate["val_accuracy_fp32"]) <= 0.005 and gate["argmax_agreement"] >= 0.99
    assert "int8 on" in err
    proto = onnx.load(str(out))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [w for w in proto.graph.initializer if w.data_type == onnx.TensorProto.INT8 and len(w.dims) == 4]
    assert weights  # convolution weights stored as int8
    scales = [w for w in proto.graph.initializer if w.name.endswith("_scale") and len(w.dims) == 1 and w.dims[0] > 1]
    assert scales  # per-channel scales
    # the uint8 images are the first layer's quantised input, read as they are: no cast, no normalisation
    assert gate["input"] == "uint8 images as they are"
    readers = {node.op_type for node in proto.graph.node if "images" in node.input}
    assert "Cast" not in readers and not any(node.op_type in ("Cast", "Sub", "Div") and node.name.startswith(
        "/normalizer/") for node in proto.graph.node)
    # and the logits come out of a float layer: not rounded to 256 levels before the softmax
    assert gate["head"] == "float"
    head = [node for node in proto.graph.node if node.op_type in ("Gemm", "MatMul")][-1]
    assert not any(node.op_type == "QuantizeLinear" and head.output[0] in node.input for node in proto.graph.node)
    from galbench.inference.classify import classify

    resolved = json.loads((finished_suite / "suite.resolved.json").read_text())
    # on a machine with three usable cores: three batches at once, each run on one thread
    import threading
    import time

    from galbench.inference import classify as classify_module

    monkeypatch.setattr(classify_module.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    lock, running, peak, threads = threading.Lock(), [0], [0], set()
    original = classify_module.OnnxRuntimeBackend.__call__

    def call(self, images):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            threads.add(self.session.get_session_options().intra_op_num_threads)
        time.sleep(0.05)  # long enough for the other lanes' batches to start
        try:
            return original(self, images)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(classify_module.OnnxRuntimeBackend, "__call__", call)
    table = classify(resolved["catalog_path"], model=out, batch_size=64)
    assert table.meta["PRECISN"] == "int8" and len(table) == 300
    assert peak[0] == 3 and threads == {1}
    # one batch at a time on the session's own threads, or three at once: the same answers
    for lanes in (3, 1):
        monkeypatch.setattr(classify_module, "cpu_lanes", lambda providers, precision, lanes=lanes: lanes)
        again = classify(resolved["catalog_path"], model=out, batch_size=64)
        assert (again["pred_label"] == table["pred_label"]).all()
        np.testing.assert_allclose(again["pred_confidence"], table["pred_confidence"], rtol=0, atol=1e-6)


def test_int8_gate_fails_when_calibrated_on_black_images(finished_suite, finished_suite_images, tmp_path):
    images, labels, split = finished_suite_images
    val = np.asarray(split["val"])
    black = np.zeros((64, 3, 64, 64), np.uint8)  # activation ranges of an empty sky: real galaxies saturate them
    out = tmp_path / "bad.onnx"
    with pytest.raises(GalbenchError, match="int8 model fails the parity gate") as raised:
        export_onnx(finished_suite / "runs" / "scratch__seed0" / "best.pt", out, images[val[:8]],
                    val_images=images[val], val_labels=labels[val], int8=True, int8_images=black)
    assert "argmax agreement" in str(raised.value) and "accuracy" in str(raised.value)
    assert not out.exists() and not out.with_suffix(".pt").exists()


def test_int8_needs_labelled_validation_images(finished_suite, finished_suite_images, tmp_path):
    images, _, _ = finished_suite_images
    with pytest.raises(GalbenchError, match="int8 export needs"):
        export_onnx(finished_suite / "runs" / "scratch__seed0" / "best.pt", tmp_path / "x.onnx", images[:8],
                    int8=True, int8_images=images[:64])
    assert not (tmp_path / "x.onnx").exists()


def test_the_gate_at_its_edges_in_galaxies():
    from galbench.inference.quantize import passes_gate

    labels = np.zeros(200, dtype=int)
    reference = labels.copy()
    reference[:93] = 1  # fp32: 107 of 200 right (0.535)
    one_more_wrong = reference.copy()
    one_more_wrong[93] = 1  # int8: 106 right (0.530), exactly 0.5 points lower; 199 of 200 agree
    assert passes_gate(reference, one_more_wrong, labels)  # 0.535 - 0.530 is 0.0050000000000000044 in floats
    two_more_wrong = one_more_wrong.copy()
    two_more_wrong[94] = 1
    assert not passes_gate(reference, two_more_wrong, labels)  # 1 point lower
    swapped = reference.copy()
    swapped[[0, 1]], swapped[[100, 101]] = 0, 1  # same accuracy, 4 of 200 disagree: agreement 0.98
    assert not passes_gate(reference, swapped, labels)
    swapped_once = reference.copy()
    swapped_once[0], swapped_once[100] = 0, 1  # same accuracy, 2 of 200 disagree: agreement exactly 0.99
    assert passes_gate(reference, swapped_once, labels)
