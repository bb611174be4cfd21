"""Rotation averaging inside the graph: the views, exact invariance to turns, agreement, and classify."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from galbench.data.catalog import Catalog, read_catalog, write_catalog
from galbench.inference.classify import classify
from galbench.inference.export import export_onnx, read_metadata
from galbench.inference.tta import dihedral_views


def test_views_are_the_numpy_turns_and_mirrors():
    images = torch.arange(2 * 3 * 5 * 5).reshape(2, 3, 5, 5)
    views = dihedral_views(images, 8).reshape(8, 2, 3, 5, 5).numpy()
    raw = images.numpy()
    turns = [np.rot90(raw, k, axes=(-2, -1)) for k in range(4)]
    for k in range(4):
        np.testing.assert_array_equal(views[k], turns[k])
        np.testing.assert_array_equal(views[4 + k], turns[k][..., ::-1])
    assert len({v.tobytes() for v in views[:, 0]}) == 8  # eight distinct symmetries
    assert dihedral_views(images, 4).shape[0] == 8 and dihedral_views(images, 1) is images


@pytest.fixture(scope="module")
def suite_data(finished_suite):
    resolved = json.loads((finished_suite / "suite.resolved.json").read_text())
    split = json.loads((finished_suite / "split.json").read_text())
    return read_catalog(resolved["catalog_path"]), split


@pytest.fixture(scope="module")
def tta_models(finished_suite, suite_data, tmp_path_factory):
    catalog, split = suite_data
    folder = tmp_path_factory.mktemp("tta")
    checkpoint = finished_suite / "runs" / "scratch__seed0" / "best.pt"
    val = np.asarray(split["val"])
    images = np.asarray(catalog.images)
    return {views: (folder / f"tta{views}.onnx", export_onnx(checkpoint, folder / f"tta{views}.onnx", images[val[:16]],
                                                             val_images=images[val], val_labels=catalog.labels[val],
                                                             tta=views))
            for views in (1, 4, 8)}


@pytest.mark.parametrize("views", [4, 8])
def test_averaged_predictions_are_invariant_to_quarter_turns(tta_models, suite_data, views):
    catalog, _ = suite_data
    path, meta = tta_models[views]
    assert meta["tta_views"] == str(views)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.asarray(catalog.images[:48])
    names = ["probabilities", "embeddings", "agreement"]
    base = session.run(names, {"images": images})
    moves = [lambda x: np.rot90(x, 1, axes=(-2, -1)), lambda x: np.rot90(x, 3, axes=(-2, -1))]
    if views == 8:
        moves.append(lambda x: x[..., ::-1])
    for move in moves:
        turned = session.run(names, {"images": np.ascontiguousarray(move(images))})
        for name, a, b in zip(names, base, turned, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)
    # without averaging the same model changes its probabilities when the galaxy turns
    single = ort.InferenceSession(str(tta_models[1][0]), providers=["CPUExecutionProvider"])
    plain = single.run(["probabilities"], {"images": images})[0]
    turned = single.run(["probabilities"], {"images": np.ascontiguousarray(np.rot90(images, 1, axes=(-2, -1)))})[0]
    assert np.abs(plain - turned).max() > 1e-3


def test_classify_reports_view_agreement(tta_models, suite_data, tmp_path):
    catalog, _ = suite_data
    path = tmp_path / "few.fits"
    write_catalog(path, Catalog(catalog.table[:40], catalog.classes, np.asarray(catalog.images[:40])))
    model, _ = tta_models[8]
    table = classify(path, model=model, out=tmp_path / "out.fits")
    agreement = np.asarray(table["pred_agreement"])
    # an agreement is a count of the 8 views over 8, and the predicted class always has at least one view
    np.testing.assert_allclose(agreement * 8, np.round(agreement * 8), atol=1e-6)
    assert agreement.min() >= 1 / 8 and agreement.max() <= 1
    # the torch backend computes the same averaged model from the checkpoint and the metadata
    torch_table = classify(path, model=model, backend="torch")
    np.testing.assert_allclose(torch_table["prob_spiral"], table["prob_spiral"], atol=1e-5)
    np.testing.assert_allclose(torch_table["pred_agreement"], agreement, atol=1e-6)
    assert read_metadata(model)["tta_views"] == 8
    assert "pred_agreement" not in classify(path, model=tta_models[1][0]).colnames
