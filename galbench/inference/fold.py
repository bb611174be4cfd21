"""Folding the input normalisation of an exported graph into its first convolution.

Every galbench graph begins `images (uint8) -> Cast -> Sub(mean) -> Div(std) -> Conv`. Two foldings, both
applied to the graph as ONNX, so they hold for any model whose first layer is a plain convolution:

- `fold_division` (every fp32 export): the division by the per-channel std moves into the convolution's
  weights, W' = W / std. Exact up to rounding: the convolution pads `images - mean` with zeros, which is
  what padding the normalised images with zeros means.
- `fold_for_raw_input` (before int8 quantisation): subtraction and division both move into the
  convolution (W' = W / std, b' = b - sum W' * mean), and its zero padding becomes explicit padding of the
  uint8 images with each band's mean rounded to an integer (at most half a grey level off, in the border
  pixels only: smaller than the input's own quantisation step). The convolution then reads the images as
  they are, so the quantised graph can take the uint8 images as its quantised input (scale 1, zero point
  0: every pixel value exact) instead of casting, normalising and re-quantising every pixel of every batch
  (`feed_raw_images`, after quantisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass
class _Prologue:
    cast: onnx.NodeProto
    sub: onnx.NodeProto
    div: onnx.NodeProto | None
    conv: onnx.NodeProto
    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)
    weight: np.ndarray  # (O, C, kh, kw)
    bias: np.ndarray  # (O,)


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if name in node.input]


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _prologue(proto: onnx.ModelProto) -> _Prologue | None:
    """The Cast -> Sub -> [Div] -> Conv chain at the graph's input, where every link has one consumer
    (no Div where `fold_division` has already moved it into the convolution)."""
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    # the Cast of the uint8 images (or of their rotated views) that the mean is subtracted from
    casts = [node for node in graph.node if node.op_type == "Cast" and _attribute(node, "to") == TensorProto.FLOAT
             and any(c.op_type == "Sub" and c.input[0] == node.output[0] and c.input[1] in initializers
                     for c in _consumers(graph, node.output[0]))]
    if len(casts) != 1:
        return None
    chain = [casts[0]]
    for op_types in (("Sub",), ("Div", "Conv"), ("Conv",)):
        following = _consumers(graph, chain[-1].output[0])
        if len(following) != 1 or following[0].op_type not in op_types or following[0].input[0] != chain[-1].output[0]:
            return None
        chain.append(following[0])
        if chain[-1].op_type == "Conv":
            break
    cast, sub, conv = chain[0], chain[1], chain[-1]
    div = chain[2] if len(chain) == 4 else None
    constants = [sub.input[1], conv.input[1]] + ([div.input[1]] if div is not None else [])
    if any(name not in initializers for name in constants):
        return None
    if _attribute(conv, "group", 1) != 1 or _attribute(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    weight = numpy_helper.to_array(initializers[conv.input[1]]).astype(np.float32)
    mean = numpy_helper.to_array(initializers[sub.input[1]]).astype(np.float32).reshape(-1)
    std = (numpy_helper.to_array(initializers[div.input[1]]).astype(np.float32).reshape(-1) if div is not None
           else np.ones_like(mean))
    if weight.ndim != 4 or len(mean) != weight.shape[1] or len(std) != weight.shape[1]:
        return None
    if len(conv.input) > 2 and conv.input[2]:
        if conv.input[2] not in initializers:
            return None
        bias = numpy_helper.to_array(initializers[conv.input[2]]).astype(np.float32)
    else:
        bias = np.zeros(weight.shape[0], np.float32)
    return _Prologue(cast, sub, div, conv, mean, std, weight, bias)


def _set_conv(graph: onnx.GraphProto, conv: onnx.NodeProto, weight: np.ndarray, bias: np.ndarray | None) -> None:
    """Give the convolution new weight (and bias) initializers of its own."""
    weight_name, bias_name = f"{conv.name}_folded_weight", f"{conv.name}_folded_bias"
    kept = [init for init in graph.initializer if init.name not in (weight_name, bias_name)]  # folded before
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.initializer.append(numpy_helper.from_array(weight.astype(np.float32), weight_name))
    conv.input[1] = weight_name
    if bias is not None:
        graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), bias_name))
        if len(conv.input) > 2:
            conv.input[2] = bias_name
        else:
            conv.input.append(bias_name)
    _drop_unused_initializers(graph)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _bypass(graph: onnx.GraphProto, node: onnx.NodeProto, replacement: str) -> None:
    """Remove a one-input node, its consumers reading `replacement` instead of its output."""
    for consumer in _consumers(graph, node.output[0]):
        for index, name in enumerate(consumer.input):
            if name == node.output[0]:
                consumer.input[index] = replacement
    graph.node.remove(node)


def fold_division(proto: onnx.ModelProto) -> bool:
    """Move Div(std) into the first convolution's weights (exact); False where the graph has no such chain."""
    found = _prologue(proto)
    if found is None or found.div is None:
        return False
    weight = found.weight / found.std[None, :, None, None]
    _bypass(proto.graph, found.div, found.sub.output[0])
    _set_conv(proto.graph, found.conv, weight, None)
    return True


def fold_for_raw_input(proto: onnx.ModelProto) -> str | None:
    """Fold normalisation and padding into the first convolution (see the module docstring).

    Returns the name of the float images tensor the convolution now reads (a Cast of the padded uint8
    images), for `feed_raw_images` after quantisation; None where the graph has no such chain.
    """
    found = _prologue(proto)
    if found is None:
        return None
    graph = proto.graph
    weight = found.weight / found.std[None, :, None, None]
    bias = found.bias - (weight * found.mean[None, :, None, None]).sum(axis=(1, 2, 3))
    kernel = found.weight.shape[2:]
    pads = list(_attribute(found.conv, "pads", [0] * 2 * len(kernel)))
    source = found.cast.input[0]
    height, width = (dim.dim_value for dim in graph.input[0].type.tensor_type.shape.dim[2:])
    if any(pads) and not (height > 0 and width > 0):
        return None  # the frames need the images' size, fixed at export
    if any(pads):
        # the band means as frames around the images, joined on with Concat (Pad's constant is one scalar for
        # all bands). In pixel-major order (N, H, W, C), the layout quantised convolutions compute in: the
        # frames join whole rows of pixels, and the transpose back to (N, C, H, W) cancels against ONNX
        # Runtime's own change of layout before the convolution, so the images are transposed once
        top, left, bottom, right = pads
        means = np.clip(np.rint(found.mean), 0, 255).astype(np.uint8)
        bands = len(found.mean)
        frames = {"left": (height, left), "right": (height, right), "top": (top, width + left + right),
                  "bottom": (bottom, width + left + right)}
        nodes = [helper.make_node("Shape", [source], ["galbench_batch_size"], name="galbench_batch_size", end=1),
                 helper.make_node("Transpose", [source], ["galbench_pixel_major"], name="galbench_pixel_major",
                                  perm=[0, 2, 3, 1])]
        for side, (rows, columns) in frames.items():
            if rows and columns:
                graph.initializer.extend([
                    numpy_helper.from_array(np.broadcast_to(means, (1, rows, columns, bands)).copy(),
                                            f"galbench_{side}_frame"),
                    numpy_helper.from_array(np.array([rows, columns, bands], np.int64), f"galbench_{side}_shape")])
                nodes += [helper.make_node("Concat", ["galbench_batch_size", f"galbench_{side}_shape"],
                                           [f"galbench_{side}_batch_shape"], name=f"galbench_{side}_batch_shape",
                                           axis=0),
                          helper.make_node("Expand", [f"galbench_{side}_frame", f"galbench_{side}_batch_shape"],
                                           [f"galbench_{side}_frames"], name=f"galbench_{side}_frames")]
        rows = [f"galbench_{side}_frames" for side in ("left",) if left] + ["galbench_pixel_major"] + \
               [f"galbench_{side}_frames" for side in ("right",) if right]
        nodes.append(helper.make_node("Concat", rows, ["galbench_wide_images"], name="galbench_pad_sides", axis=2))
        columns = [f"galbench_{side}_frames" for side in ("top",) if top] + ["galbench_wide_images"] + \
                  [f"galbench_{side}_frames" for side in ("bottom",) if bottom]
        nodes += [helper.make_node("Concat", columns, ["galbench_padded_pixel_major"], name="galbench_pad_top_bottom",
                                   axis=1),
                  helper.make_node("Transpose", ["galbench_padded_pixel_major"], ["galbench_padded_images"],
                                   name="galbench_band_major", perm=[0, 3, 1, 2])]
        position = list(graph.node).index(found.cast)
        for offset, node in enumerate(nodes):
            graph.node.insert(position + offset, node)
        found.cast.input[0] = "galbench_padded_images"
        for attribute in found.conv.attribute:
            if attribute.name == "pads":
                attribute.ints[:] = [0] * len(pads)
    if found.div is not None:
        _bypass(graph, found.div, found.sub.output[0])
    _bypass(graph, found.sub, found.cast.output[0])
    _set_conv(graph, found.conv, weight, bias)
    return found.cast.output[0]


def feed_raw_images(proto: onnx.ModelProto, float_images: str) -> bool:
    """In a quantised graph, let the first DequantizeLinear read the uint8 images themselves.

    `float_images` is `fold_for_raw_input`'s tensor: Cast(uint8 images) followed by QuantizeLinear with
    scale 1 and zero point 0 (so fixed at quantisation), which is the identity on uint8 values; both go.
    False (graph unchanged) where that pattern is not there.
    """
    graph = proto.graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    casts = [node for node in graph.node if node.op_type == "Cast" and node.output[0] == float_images]
    following = _consumers(graph, float_images)
    if len(casts) != 1 or len(following) != 1 or following[0].op_type != "QuantizeLinear":
        return False
    quantize = following[0]
    scale, zero_point = (initializers.get(name) for name in quantize.input[1:3])
    if (scale is None or zero_point is None or float(scale) != 1.0 or int(zero_point) != 0
            or zero_point.dtype != np.uint8):
        return False
    _bypass(graph, quantize, casts[0].input[0])
    graph.node.remove(casts[0])
    _drop_unused_initializers(graph)
    return True
