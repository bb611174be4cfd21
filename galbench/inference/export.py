"""ONNX export: self-describing models that take raw uint8 images, checked against PyTorch before they ship.

The exported graph casts and normalises inside, so no caller can get the preprocessing wrong; its batch
dimension is dynamic; its metadata carries the class names, input size, centre-crop rule, normalisation,
galbench version, suite, run, seed, the checkpoint's SHA-256, and the parity figures of the check.
The checkpoint is copied beside the ONNX file (same name, `.pt`) for the torch backend of `classify`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from galbench import __version__
from galbench.data.tensors import Normalizer, prepare_images
from galbench.errors import GalbenchError
from galbench.fileio import atomic_path, file_sha256
from galbench.models.registry import IMAGENET_MEAN, IMAGENET_STD, build_model
from galbench.models.weights import load_checkpoint

MAX_LOGIT_DIFFERENCE = 1e-3
FP16_MAX_LOGIT_DIFFERENCE, FP16_MIN_AGREEMENT = 0.05, 0.99  # half precision rounds; it may flip a near-tie
OPSET = 17


class DeployedClassifier(nn.Module):
    """uint8 (N, 3, H, W) -> (logits, probabilities): normalisation inside the graph."""

    def __init__(self, model: nn.Module, image_size: int):
        super().__init__()
        self.normalizer = Normalizer()
        self.model = model
        if hasattr(model, "prepare_for_export"):
            model.prepare_for_export(image_size)

    def forward(self, images: torch.Tensor):
        logits = self.model(self.normalizer(images))
        return logits, torch.softmax(logits, dim=1)


def deployed_from_checkpoint(checkpoint: dict) -> DeployedClassifier:
    """The evaluation-mode deployed module of a galbench checkpoint."""
    model = build_model(checkpoint["model"], len(checkpoint["classes"]), checkpoint["image_size"])
    model.load_state_dict(checkpoint["state_dict"])
    return DeployedClassifier(model, checkpoint["image_size"]).eval()


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model in half precision, keeping uint8 in and float32 out, and the normalisation in float32."""
    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError:
        raise GalbenchError("fp16 export needs onnxconverter-common", fix="pip install 'galbench[fp16]'") from None
    keep = [node.name for node in proto.graph.node if node.name.startswith("/normalizer/") or node.op_type == "Softmax"]
    return convert_float_to_float16(proto, keep_io_types=True, node_block_list=keep)


def export_onnx(checkpoint_path: Path, out: Path, sample_images: np.ndarray, extra_meta: dict | None = None,
                fp16: bool = False) -> dict:
    """Export a checkpoint to ONNX, check it (onnx.checker, then ONNX Runtime against PyTorch), return metadata."""
    import warnings

    import onnxruntime as ort

    checkpoint_path, out = Path(checkpoint_path), Path(out)
    checkpoint = load_checkpoint(checkpoint_path)
    deployed = deployed_from_checkpoint(checkpoint)
    size, crop = checkpoint["image_size"], checkpoint.get("crop", 1.0)
    images = prepare_images(sample_images, crop, size)
    meta = {
        "galbench_version": __version__, "classes": json.dumps(checkpoint["classes"]), "input_size": str(size),
        "input_layout": "uint8 (N, 3, H, W), bands as in the training catalog",
        "crop": json.dumps({"rule": "centre", "fraction_of_side": crop}),
        "normalisation": json.dumps({"scale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}),
        "model": checkpoint["model"], "checkpoint_sha256": file_sha256(checkpoint_path),
        **{k: str(v) for k, v in checkpoint.get("meta", {}).items() if k in ("suite", "variant", "seed", "init")},
        **{k: str(v) for k, v in (extra_meta or {}).items()},
    }
    with atomic_path(out) as tmp:
        torch.onnx.export(deployed, (images[:2],), str(tmp), input_names=["images"],
                          output_names=["logits", "probabilities"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}})
        model_proto = onnx.load(str(tmp))
        if fp16:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the converter warns about values it clamps to fp16's range
                model_proto = to_fp16(model_proto)
            onnx.save(model_proto, str(tmp))
        onnx.checker.check_model(model_proto, full_check=True)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        onnx_logits = session.run(["logits"], {"images": images.numpy()})[0]
        with torch.no_grad():
            torch_logits = deployed(images)[0].numpy()
        difference = float(np.abs(onnx_logits - torch_logits).max())
        agreement = float((onnx_logits.argmax(1) == torch_logits.argmax(1)).mean())
        meta.update(precision="fp16" if fp16 else "fp32", parity_max_abs_logit_difference=f"{difference:.3g}",
                    parity_argmax_agreement=f"{agreement:.4f}", parity_images=str(len(images)))
        limit, needed = (FP16_MAX_LOGIT_DIFFERENCE, FP16_MIN_AGREEMENT) if fp16 else (MAX_LOGIT_DIFFERENCE, 1.0)
        if difference > limit or agreement < needed:
            raise GalbenchError(f"ONNX Runtime disagrees with PyTorch: max |logit difference| {difference:.3g}, "
                                f"argmax agreement {agreement:.4f} on {len(images)} images", where=str(out))
        for key, value in meta.items():
            entry = model_proto.metadata_props.add()
            entry.key, entry.value = key, value
        model_proto.doc_string = f"galbench {checkpoint['model']} classifier: {', '.join(checkpoint['classes'])}"
        onnx.save(model_proto, str(tmp))
    with atomic_path(out.with_suffix(".pt")) as tmp:
        shutil.copyfile(checkpoint_path, tmp)
    return meta


def read_metadata(path: Path) -> dict:
    """The metadata of a galbench ONNX model; a corrupt or foreign file gets a clear error."""
    path = Path(path)
    if not path.exists():
        raise GalbenchError("model file not found", where=str(path))
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError types
        raise GalbenchError(f"not a readable ONNX model ({type(exc).__name__})", where=str(path)) from None
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    for key in ("classes", "input_size", "crop", "checkpoint_sha256"):
        if key not in meta:
            raise GalbenchError(f"ONNX model lacks galbench metadata {key!r}", where=str(path),
                                fix="export models with galbench export")
    meta["classes"] = json.loads(meta["classes"])
    meta["input_size"] = int(meta["input_size"])
    meta["crop"] = json.loads(meta["crop"])["fraction_of_side"]
    return meta
