"""Calibration: the temperature fit against a grid search, ECE by hand, and calibrated ONNX models."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from galbench.inference.calibrate import (
    calibrate,
    fit_temperature,
    negative_log_likelihood,
    probabilities,
    reliability,
)
from galbench.inference.export import export_onnx, read_metadata, view_logits
from galbench.models.weights import CHECKPOINT_FORMAT, load_checkpoint


def _overconfident_logits(rng, n=2000, classes=3, views=1, scale=6.0):
    """Logits whose softmax is far too sure: the true class is favoured only mildly, then scaled up."""
    labels = rng.integers(0, classes, n)
    base = rng.normal(size=(views, n, classes))
    base[:, np.arange(n), labels] += 0.8
    return base * scale, labels


@pytest.mark.parametrize("views", [1, 4])
def test_fitted_temperature_is_the_grid_search_minimum(views):
    logits, labels = _overconfident_logits(np.random.default_rng(views), views=views)
    fitted = fit_temperature(logits if views > 1 else logits[0], labels)
    grid = np.exp(np.linspace(np.log(0.05), np.log(40), 4001))
    nll = [negative_log_likelihood(logits, labels, t) for t in grid]
    best = grid[int(np.argmin(nll))]
    assert fitted == pytest.approx(best, rel=3e-3)
    assert negative_log_likelihood(logits, labels, fitted) <= min(nll) + 1e-9
    assert fitted > 1.5  # overconfident logits need softening


def test_nll_matches_a_direct_computation():
    logits = np.array([[[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], [[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]]])
    labels = np.array([0, 1])
    t = 1.7
    p = np.exp(logits / t) / np.exp(logits / t).sum(-1, keepdims=True)
    mean = p.mean(0)
    assert negative_log_likelihood(logits, labels, t) == pytest.approx(-np.log(mean[[0, 1], labels]).mean())
    np.testing.assert_allclose(probabilities(logits, t), mean)


def test_ece_and_reliability_by_hand():
    # confidences 0.95 (right), 0.95 (wrong), 0.5 (right), 1/15 exactly falls in the first bin, 1.0 in the last
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.5, 0.5], [1.0, 0.0]])
    labels = np.array([0, 1, 0, 0])
    table = reliability(probs, labels, bins=15)
    assert table.count[14] == 3 and table.count[7] == 1 and sum(table.count) == 4
    assert table.accuracy[14] == pytest.approx(2 / 3) and table.confidence[14] == pytest.approx((0.95 * 2 + 1) / 3)
    assert table.confidence[0] is None and table.accuracy[0] is None
    expected = (3 * abs(2 / 3 - (2.9 / 3)) + 1 * abs(1.0 - 0.5)) / 4
    assert table.ece == pytest.approx(expected)
    edge = reliability(np.array([[1 / 15, 14 / 15]]), np.array([1]), bins=15)
    assert edge.count[13] == 1  # 14/15 is the upper edge of bin 13, not the start of bin 14


def test_calibration_lowers_ece_of_overconfident_logits():
    logits, labels = _overconfident_logits(np.random.default_rng(3))
    result = calibrate(logits[0], labels)
    assert result.before.ece > 0.15 and result.after.ece < result.before.ece / 3


@pytest.fixture(scope="module")
def overconfident_checkpoint(finished_suite, tmp_path_factory):
    """The suite's best checkpoint with its head scaled by 40: same predictions, far too sure of them."""
    checkpoint = load_checkpoint(finished_suite / "runs" / "scratch__seed0" / "best.pt")
    state = dict(checkpoint["state_dict"])
    for key in ("classifier.6.weight", "classifier.6.bias"):
        state[key] = state[key] * 40
    path = tmp_path_factory.mktemp("overconfident") / "over.pt"
    torch.save({**checkpoint, "state_dict": state, "format": CHECKPOINT_FORMAT}, path)
    return path


def test_export_calibrates_an_overconfident_model_and_the_temperature_reproduces(overconfident_checkpoint,
                                                                                 finished_suite_images, tmp_path):
    images, labels, split = finished_suite_images
    val = np.asarray(split["val"] + split["test"])  # 120 galaxies: enough bins to see the ECE move
    out = tmp_path / "over.onnx"
    meta = export_onnx(overconfident_checkpoint, out, images[val[:16]], val_images=images[val], val_labels=labels[val])
    calibration = json.loads(meta["calibration"])
    assert set(calibration) == {"temperature", "ece_before", "ece_after", "bins", "reliability_before",
                                "reliability_after"}
    assert calibration["bins"] == 15 and sum(calibration["reliability_after"]["count"]) == len(val)
    assert calibration["temperature"] > 2 and calibration["ece_after"] < calibration["ece_before"]
    assert float(read_metadata(out)["temperature"]) == pytest.approx(calibration["temperature"], rel=1e-6)
    # ONNX Runtime: probabilities = softmax(logits / T), logits raw; torch computes the same from the checkpoint
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_probs = session.run(["logits", "probabilities"], {"images": images[val]})
    from galbench.inference.export import deployed_from_checkpoint

    raw = deployed_from_checkpoint(load_checkpoint(overconfident_checkpoint))
    torch_logits = view_logits(raw, torch.from_numpy(images[val]))[0]
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
    t = calibration["temperature"]
    expected = torch.softmax(torch.from_numpy(torch_logits) / t, 1).numpy()
    np.testing.assert_allclose(onnx_probs, expected, atol=1e-5)
    # the ECE stored is the ECE of what the file outputs
    assert reliability(onnx_probs, labels[val]).ece == pytest.approx(calibration["ece_after"], abs=1e-4)


def test_cli_export_calibrates_on_the_runs_split_or_not_at_all(cli, finished_suite, tmp_path):
    checkpoint = finished_suite / "runs" / "scratch__seed0" / "best.pt"
    code, stdout, err = cli("export", checkpoint, tmp_path / "cal.onnx", "--run", finished_suite)
    assert code == 0, err
    split = json.loads((finished_suite / "split.json").read_text())
    meta = read_metadata(tmp_path / "cal.onnx")
    calibration = json.loads(meta["calibration"])
    assert sum(calibration["reliability_before"]["count"]) == len(split["val"])
    assert f"calibrated on {len(split['val'])} validation images" in err
    code, _, err = cli("export", checkpoint, tmp_path / "raw.onnx", "--run", finished_suite, "--no-calibrate")
    assert code == 0, err
    raw = read_metadata(tmp_path / "raw.onnx")
    assert raw["temperature"] == 1.0 and "calibration" not in raw
    code, _, err = cli("export", checkpoint, tmp_path / "sim.onnx", "--parity-images", 8)
    assert code == 0 and "probabilities are raw softmax" in err
