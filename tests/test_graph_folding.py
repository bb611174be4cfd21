"""Exported graphs fold the input normalisation into the first convolution, exactly where it can be exact."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from galbench.inference.fold import feed_raw_images, fold_division, fold_for_raw_input

SIZE, KERNEL, STRIDE, PAD = 32, 11, 4, 2
IMAGENET_MEANS = np.array([123.675, 116.28, 103.53], np.float32)
IMAGENET_STDS = np.array([58.395, 57.12, 57.375], np.float32)


def _graph(means: np.ndarray, stds: np.ndarray, pads=(PAD,) * 4, strides=(STRIDE, STRIDE),
           kernel=(KERNEL, KERNEL), shape=(SIZE, SIZE)) -> onnx.ModelProto:
    """images (uint8) -> Cast -> Sub(means) -> Div(stds) -> Conv(11 x 11, stride 4, pads 2) -> out."""
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.1, (5, 3, *kernel)).astype(np.float32)
    bias = rng.normal(0, 0.1, 5).astype(np.float32)
    nodes = [helper.make_node("Cast", ["images"], ["float"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["float", "mean"], ["centred"]),
             helper.make_node("Div", ["centred", "std"], ["normalised"]),
             helper.make_node("Conv", ["normalised", "w", "b"], ["out"], kernel_shape=list(kernel),
                              strides=list(strides), pads=list(pads), name="conv")]
    inits = [numpy_helper.from_array(means.reshape(1, 3, 1, 1), "mean"),
             numpy_helper.from_array(stds.reshape(1, 3, 1, 1), "std"),
             numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                                         ["n", 3, *shape])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 5, "h", "w"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(proto: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["out"], {"images": images})[0]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (4, 3, SIZE, SIZE), dtype=np.uint8)


def test_folding_the_division_is_exact(images):
    proto = _graph(IMAGENET_MEANS, IMAGENET_STDS)
    want = _run(proto, images)
    assert fold_division(proto)
    assert "Div" not in {node.op_type for node in proto.graph.node}
    np.testing.assert_allclose(_run(proto, images), want, atol=1e-4, rtol=1e-5)
    assert not fold_division(proto)  # nothing left to fold


def test_folding_for_raw_input_is_exact_where_the_band_means_are_whole_grey_levels(images):
    means = np.array([124.0, 116.0, 104.0], np.float32)
    proto = _graph(means, IMAGENET_STDS)
    want = _run(proto, images)
    float_images = fold_for_raw_input(proto)
    ops = [node.op_type for node in proto.graph.node]
    assert float_images and "Sub" not in ops and "Div" not in ops and "Pad" not in ops
    conv = next(node for node in proto.graph.node if node.op_type == "Conv")
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [0, 0, 0, 0]
    np.testing.assert_allclose(_run(proto, images), want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("pads", [(1, 0, 3, 2), (0, 2, 0, 1), (3, 1, 0, 0)])
def test_folding_for_raw_input_puts_each_side_of_the_frame_where_it_belongs(pads):
    """Uneven padding (ONNX order: top, left, bottom, right) on an image that is not square."""
    means = np.array([124.0, 116.0, 104.0], np.float32)
    proto = _graph(means, IMAGENET_STDS, pads=pads, strides=(2, 3), kernel=(5, 4), shape=(20, 27))
    images = np.random.default_rng(2).integers(0, 256, (3, 3, 20, 27), dtype=np.uint8)
    want = _run(proto, images)
    assert fold_for_raw_input(proto)
    np.testing.assert_allclose(_run(proto, images), want, atol=1e-4, rtol=1e-5)


def test_folding_for_raw_input_needs_the_images_size():
    proto = _graph(IMAGENET_MEANS, IMAGENET_STDS)
    for dim in proto.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "side"  # a size known only when the graph runs: no frame can be built
    before = proto.SerializeToString()
    assert fold_for_raw_input(proto) is None and proto.SerializeToString() == before


def test_folding_for_raw_input_rounds_the_border_only_and_by_at_most_half_a_grey_level(images):
    proto = _graph(IMAGENET_MEANS, IMAGENET_STDS)
    want = _run(proto, images)
    weight = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "w"))
    fold_for_raw_input(proto)
    got = _run(proto, images)
    # outputs whose window lies inside the image read no padding: exact there
    inside = slice(1, (SIZE + 2 * PAD - KERNEL) // STRIDE)  # windows starting at >= PAD and ending <= SIZE + PAD
    np.testing.assert_allclose(got[:, :, inside, inside], want[:, :, inside, inside], atol=1e-4, rtol=1e-5)
    # on the border each padded pixel is off by (round(mean) - mean) / std, under half a grey level
    offset = np.abs(np.rint(IMAGENET_MEANS) - IMAGENET_MEANS) / IMAGENET_STDS
    bound = float((np.abs(weight) * offset[None, :, None, None]).sum(axis=(1, 2, 3)).max())
    difference = np.abs(got - want).max()
    assert 0 < difference <= bound + 1e-4


def test_raw_input_keeps_a_graph_without_the_pattern_unchanged():
    proto = _graph(IMAGENET_MEANS, IMAGENET_STDS)
    proto.graph.node[2].op_type = "Mul"  # not a division by the std: no longer the normalisation chain
    before = proto.SerializeToString()
    assert fold_for_raw_input(proto) is None and not fold_division(proto)
    assert proto.SerializeToString() == before
    assert not feed_raw_images(proto, "float")  # Cast followed by no QuantizeLinear: left alone


def test_quantised_graph_reads_the_uint8_images_themselves(images, tmp_path):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    proto = _graph(IMAGENET_MEANS, IMAGENET_STDS)
    float_images = fold_for_raw_input(proto)
    onnx.save(proto, str(tmp_path / "folded.onnx"))

    class Reader:
        batches = iter([{"images": images}])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(tmp_path / "folded.onnx"), str(tmp_path / "int8.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"TensorQuantOverrides": {float_images: [
                        {"scale": np.array(1.0, np.float32), "zero_point": np.array(0, np.uint8)}]}})
    quantised = onnx.load(str(tmp_path / "int8.onnx"))
    before = _run(quantised, images)
    assert feed_raw_images(quantised, float_images)
    assert "Cast" not in {node.op_type for node in quantised.graph.node}
    # removing Cast -> QuantizeLinear(scale 1, zero point 0) changes nothing: it was the identity on uint8
    np.testing.assert_array_equal(_run(quantised, images), before)
