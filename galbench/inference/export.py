"""ONNX export: self-describing models that take raw uint8 images, checked against PyTorch before they ship.

The exported graph casts and normalises inside, so no caller can get the preprocessing wrong; its batch
dimension is dynamic. Its outputs:

- `logits` (N, C): raw logits, averaged over the views under rotation averaging, never temperature-scaled;
- `probabilities` (N, C): the mean over views of softmax(logits / T), with T the temperature fitted on the
  validation split at export (T = 1 with `calibrate=False`): calibrated wherever the file goes;
- `embeddings` (N, D): the penultimate-layer vector (`forward_head(..., pre_logits=True)`), view-averaged;
- `agreement` (N,): the fraction of views whose argmax equals the averaged prediction (1 with one view).

Its metadata carries the class names, input size, centre-crop rule, normalisation, science-image stretch
(the training catalog's `STRETCH`), the rule that makes image files into inputs (`resampling`: the import's
crop and size, Lanczos, then the model's crop and size, bilinear), input pixel scale, galbench version,
suite, variant, run, seed, the checkpoint's SHA-256, the temperature and calibration figures, the view
count, the parity figures, and `weights_sha256`: the SHA-256 of the serialised graph (weights included,
metadata excluded), verified whenever the model is read.
The checkpoint is copied beside the ONNX file (same name, `.pt`) for the torch backend of `classify`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from galbench import __version__
from galbench.data.catalog import Catalog
from galbench.data.stretch import format_stretch, parse_stretch
from galbench.data.tensors import Normalizer, prepare_images
from galbench.errors import GalbenchError
from galbench.fileio import atomic_path, file_sha256
from galbench.inference.calibrate import calibrate as fit_calibration
from galbench.inference.fold import fold_division
from galbench.inference.tta import VIEW_COUNTS, dihedral_views
from galbench.models.registry import IMAGENET_MEAN, IMAGENET_STD, build_model, embedding_size
from galbench.models.weights import load_checkpoint

MAX_LOGIT_DIFFERENCE = 1e-3
FP16_MAX_LOGIT_DIFFERENCE, FP16_MIN_AGREEMENT = 0.05, 0.99  # half precision rounds; it may flip a near-tie
OPSET = 17
OUTPUTS = ("logits", "probabilities", "embeddings", "agreement")
FORWARD_BATCH = 256
IMPORT_FILTER, INPUT_FILTER = "lanczos", "bilinear, antialiased"  # crop_and_resize's and prepare_images'


class DeployedClassifier(nn.Module):
    """uint8 (N, 3, H, W) -> (logits, probabilities, embeddings, agreement), see the module docstring."""

    def __init__(self, model: nn.Module, image_size: int, temperature: float = 1.0, views: int = 1):
        super().__init__()
        if views not in VIEW_COUNTS:
            raise GalbenchError(f"rotation averaging takes {', '.join(map(str, VIEW_COUNTS))} views, not {views}")
        self.normalizer = Normalizer()
        self.model = model
        self.views = views
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        if hasattr(model, "prepare_for_export"):
            model.prepare_for_export(image_size)
        # the head applied to the embedding gives the logits (the registry's interface), so one forward
        # through the backbone yields both
        self.head = model.get_submodule(model.head_name)

    def view_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw logits (V, N, C) and embeddings (V, N, D) of every view."""
        # views turned while still uint8 (a quarter of the bytes of float views), then normalised, so that the
        # graph's first convolution follows the normalisation directly (see fold.py)
        inputs = self.normalizer(dihedral_views(images, self.views))
        if inputs.dtype != self.temperature.dtype:  # a half-precision model in torch; never in the exported graph
            inputs = inputs.to(self.temperature.dtype)
        embeddings = self.model.forward_head(self.model.forward_features(inputs), pre_logits=True)
        logits = self.head(embeddings)
        return (logits.float().reshape(self.views, -1, logits.shape[-1]),
                embeddings.float().reshape(self.views, -1, embeddings.shape[-1]))

    def forward(self, images: torch.Tensor):
        logits, embeddings = self.view_outputs(images)
        probabilities = torch.softmax(logits / self.temperature.float(), dim=-1).mean(0)
        agreement = (logits.argmax(-1) == probabilities.argmax(-1)).float().mean(0)
        return logits.mean(0), probabilities, embeddings.mean(0), agreement


def deployed_from_checkpoint(checkpoint: dict, temperature: float = 1.0, views: int = 1) -> DeployedClassifier:
    """The evaluation-mode deployed module of a galbench checkpoint."""
    model = build_model(checkpoint["model"], len(checkpoint["classes"]), checkpoint["image_size"])
    model.load_state_dict(checkpoint["state_dict"])
    return DeployedClassifier(model, checkpoint["image_size"], temperature, views).eval()


def deployed_from_metadata(checkpoint: dict, meta: dict) -> DeployedClassifier:
    """The torch module that computes what an exported model's graph computes (temperature, views)."""
    return deployed_from_checkpoint(checkpoint, meta["temperature"], meta["tta_views"])


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model in half precision, keeping uint8 in and float32 out, and the normalisation in float32."""
    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError:
        raise GalbenchError("fp16 export needs onnxconverter-common", fix="pip install 'galbench[fp16]'") from None
    # the normalisation, the softmax and the casts of the averaging tail stay in float32
    keep = [node.name for node in proto.graph.node
            if node.name.startswith("/normalizer/") or node.op_type in ("Softmax", "Cast")]
    return convert_float_to_float16(proto, keep_io_types=True, node_block_list=keep)


def graph_sha256(proto: onnx.ModelProto) -> str:
    """SHA-256 of the serialised graph: every node and weight, none of the metadata."""
    return hashlib.sha256(proto.graph.SerializeToString()).hexdigest()


@torch.no_grad()
def reference_outputs(deployed: DeployedClassifier, images: torch.Tensor) -> dict[str, np.ndarray]:
    """What the graph must output, computed independently: each view turned in numpy, the plain model's forward."""
    model, views, temperature = deployed.model, deployed.views, float(deployed.temperature)
    raw = images.numpy()
    turned = [raw] if views == 1 else [np.rot90(raw, k, axes=(-2, -1)) for k in range(4)]
    if views == 8:
        turned += [np.ascontiguousarray(view[..., ::-1]) for view in turned]
    logits, embeddings = [], []
    for view in turned:
        inputs = deployed.normalizer(torch.from_numpy(np.ascontiguousarray(view)))
        logits.append(model(inputs).numpy())
        embeddings.append(model.forward_head(model.forward_features(inputs), pre_logits=True).numpy())
    logits_v = np.stack(logits)
    probs_v = torch.softmax(torch.from_numpy(logits_v) / temperature, -1).numpy()
    probabilities = probs_v.mean(0)
    return {"logits": logits_v.mean(0), "probabilities": probabilities, "embeddings": np.stack(embeddings).mean(0),
            "agreement": (logits_v.argmax(-1) == probabilities.argmax(-1)).mean(0)}


@torch.no_grad()
def view_logits(deployed: DeployedClassifier, images: torch.Tensor) -> np.ndarray:
    """Raw logits (V, N, C) of prepared uint8 images, in batches."""
    parts = [deployed.view_outputs(images[i:i + FORWARD_BATCH])[0] for i in range(0, len(images), FORWARD_BATCH)]
    return torch.cat(parts, 1).numpy()


def _labelled(images, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels):
        raise GalbenchError(f"{what}: {len(images)} images but {len(labels)} labels")
    if labels.size == 0:
        raise GalbenchError(f"{what}: no labelled images", fix="give labelled validation images (--data or --run)")
    return np.asarray(images), labels


def export_onnx(checkpoint_path: Path, out: Path, sample_images: np.ndarray, extra_meta: dict | None = None,
                fp16: bool = False, *, val_images: np.ndarray | None = None, val_labels: np.ndarray | None = None,
                calibrate: bool = True, tta: int = 1, int8: bool = False, int8_images: np.ndarray | None = None,
                stretch: str | None = None, catalog: Catalog | None = None) -> dict:
    """Export a checkpoint to ONNX, check it (onnx.checker, then ONNX Runtime against PyTorch), return metadata.

    `val_images`/`val_labels` (the run's validation split, raw catalog images and the checkpoint's class
    indices) fit the temperature when `calibrate`, and gate the int8 model; `int8_images` (training images)
    set the int8 activation ranges. `tta` is 1, 4 or 8 views. From `catalog` (the training catalog) the
    metadata records for classify its stretch, its import's crop and size, and its pixel scale; `stretch`
    (a `--stretch` spec) is needed only without a catalog, and refused where it contradicts the catalog's.
    """
    import onnxruntime as ort

    checkpoint_path, out = Path(checkpoint_path), Path(out)
    if fp16 and int8:
        raise GalbenchError("choose one of --fp16 and --int8")
    checkpoint = load_checkpoint(checkpoint_path)
    size, crop = checkpoint["image_size"], checkpoint.get("crop", 1.0)
    deployed = deployed_from_checkpoint(checkpoint, views=tta)
    images = prepare_images(sample_images, crop, size)
    meta = {
        "galbench_version": __version__, "classes": json.dumps(checkpoint["classes"]), "input_size": str(size),
        "input_layout": "uint8 (N, 3, H, W), bands as in the training catalog",
        "crop": json.dumps({"rule": "centre", "fraction_of_side": crop}),
        "normalisation": json.dumps({"scale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}),
        "model": checkpoint["model"], "checkpoint_sha256": file_sha256(checkpoint_path),
        "outputs": json.dumps(list(OUTPUTS)), "tta_views": str(tta),
        "embedding_size": str(embedding_size(deployed.model)),
        "stretch": json.dumps(chosen_stretch(stretch, catalog)),
        "resampling": json.dumps({"import_crop": catalog.import_crop if catalog else None,
                                  "import_size": catalog.import_size if catalog else None,
                                  "import_filter": IMPORT_FILTER, "input_filter": INPUT_FILTER}),
        **{k: str(v) for k, v in checkpoint.get("meta", {}).items() if k in ("suite", "variant", "seed", "init")},
        **{k: str(v) for k, v in (extra_meta or {}).items()},
    }
    if catalog is not None and catalog.pixscale is not None:
        # the model sees crop * side catalog pixels resampled to `size`: its input's pixel scale
        side = np.asarray(sample_images).shape[-1]
        meta["input_pixscale_arcsec"] = f"{catalog.pixscale * side * crop / size:.6g}"
    val = None
    if val_images is not None and val_labels is not None:
        val_raw, labels = _labelled(val_images, val_labels, "validation split")
        val = (prepare_images(val_raw, crop, size), labels)
    if calibrate and val is not None:
        calibration = fit_calibration(view_logits(deployed, val[0]), val[1])
        deployed.temperature.fill_(calibration.temperature)
        meta["calibration"] = calibration.as_json()
    meta["temperature"] = f"{float(deployed.temperature):.9g}"
    with atomic_path(out) as tmp:
        torch.onnx.export(deployed, (images[:2],), str(tmp), input_names=["images"], output_names=list(OUTPUTS),
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in ("images", *OUTPUTS)})
        model_proto = onnx.load(str(tmp))
        if fp16:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the converter warns about values it clamps to fp16's range
                model_proto = to_fp16(model_proto)
        else:
            fold_division(model_proto)  # checked, like all of the graph, by the parity check below
        onnx.save(model_proto, str(tmp))
        onnx.checker.check_model(model_proto, full_check=True)
        meta.update(_parity(ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]), deployed, images,
                            fp16, out))
        if int8:
            from galbench.inference.quantize import quantize_int8

            if val is None or int8_images is None:
                raise GalbenchError("int8 export needs training images (ranges) and labelled validation images "
                                    "(the accuracy gate)", fix="pass --run RUN_DIR or --data CATALOG with labels")
            quantised, figures = quantize_int8(tmp, prepare_images(np.asarray(int8_images), crop, size).numpy(),
                                               val[0].numpy(), val[1], where=str(out))
            model_proto = quantised
            meta["quantization"] = json.dumps(figures)
        meta["precision"] = "int8" if int8 else "fp16" if fp16 else "fp32"
        meta["weights_sha256"] = graph_sha256(model_proto)
        del model_proto.metadata_props[:]
        for key, value in meta.items():
            entry = model_proto.metadata_props.add()
            entry.key, entry.value = key, value
        model_proto.doc_string = f"galbench {checkpoint['model']} classifier: {', '.join(checkpoint['classes'])}"
        onnx.save(model_proto, str(tmp))
    with atomic_path(out.with_suffix(".pt")) as tmp:
        shutil.copyfile(checkpoint_path, tmp)
    return meta


def chosen_stretch(given: str | None, catalog: Catalog | None) -> dict:
    """The stretch a model records: its training catalog's, else `given` (a spec), else minmax.

    A `given` stretch that differs from the catalog's is refused: the model would stretch FITS files at
    classify unlike the images it was trained on.
    """
    if catalog is None:
        return parse_stretch(given)
    recorded = parse_stretch(catalog.stretch)
    if given is not None and parse_stretch(given) != recorded:
        raise GalbenchError(f"--stretch {format_stretch(parse_stretch(given))} contradicts the training catalog's "
                            f"stretch {catalog.stretch} (its STRETCH header)", where=str(catalog.path or "catalog"),
                            fix="drop --stretch: the model records the catalog's")
    return recorded


def _parity(session, deployed: DeployedClassifier, images: torch.Tensor, fp16: bool, out: Path) -> dict:
    """Compare ONNX Runtime with the plain model's forward on each view; raise on disagreement."""
    got = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"images": images.numpy()}), strict=True))
    want = reference_outputs(deployed, images)
    difference = float(np.abs(got["logits"] - want["logits"]).max())
    agreement = float((got["logits"].argmax(1) == want["logits"].argmax(1)).mean())
    limit, needed = (FP16_MAX_LOGIT_DIFFERENCE, FP16_MIN_AGREEMENT) if fp16 else (MAX_LOGIT_DIFFERENCE, 1.0)
    problems = []
    if difference > limit or agreement < needed:
        problems.append(f"max |logit difference| {difference:.3g}, argmax agreement {agreement:.4f}")
    if not fp16:
        for name in ("probabilities", "embeddings", "agreement"):
            scale = max(1.0, float(np.abs(want[name]).max()))
            if np.abs(got[name] - want[name]).max() > MAX_LOGIT_DIFFERENCE * scale:
                problems.append(f"{name} differ by {float(np.abs(got[name] - want[name]).max()):.3g}")
    if problems:
        raise GalbenchError(f"ONNX Runtime disagrees with PyTorch: {'; '.join(problems)} on {len(images)} images",
                            where=str(out))
    return {"parity_max_abs_logit_difference": f"{difference:.3g}", "parity_argmax_agreement": f"{agreement:.4f}",
            "parity_images": str(len(images))}


def _resampling(recorded: str | None, input_size: int, crop: float) -> dict:
    """The recorded rule for image files; for models exported before it was recorded, the rule they followed
    (files resized straight to the input size, Lanczos), as nearly as the two-stage rule allows."""
    if recorded and recorded.startswith("{"):
        return json.loads(recorded)
    return {"import_crop": None, "import_size": round(input_size / crop), "import_filter": IMPORT_FILTER,
            "input_filter": INPUT_FILTER}


def read_metadata(path: Path) -> dict:
    """The metadata of a galbench ONNX model; a corrupt, altered or foreign file gets a clear error."""
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
    # models exported before weights_sha256 existed carry no hash to check
    if "weights_sha256" in meta and graph_sha256(proto) != meta["weights_sha256"]:
        raise GalbenchError("the model's weights do not match its weights_sha256: the file is corrupted or was "
                            "altered after export", where=str(path), fix="export it again")
    meta["classes"] = json.loads(meta["classes"])
    meta["input_size"] = int(meta["input_size"])
    meta["crop"] = json.loads(meta["crop"])["fraction_of_side"]
    meta["tta_views"] = int(meta.get("tta_views", 1))
    meta["temperature"] = float(meta.get("temperature", 1.0))
    meta["stretch"] = json.loads(meta["stretch"]) if "stretch" in meta else parse_stretch(None)
    meta["resampling"] = _resampling(meta.get("resampling"), meta["input_size"], meta["crop"])
    meta["outputs"] = json.loads(meta.get("outputs", '["logits", "probabilities"]'))
    return meta
