"""`galbench classify`: a catalog in, the same catalog with predictions out, in batches of any catalog size.

Backends: ONNX Runtime (TensorRT, then CUDA, then CPU: the fastest installed provider first) and PyTorch
(CUDA fp16 channels_last, or CPU). Batches stream from the memory-mapped FITS file while a thread prepares
the next one, so memory stays flat as the catalog grows. Results go to OUT.partial/ in chunks as they
finish; the output FITS is written to a temporary file and renamed at the end; `resume` reuses the
finished chunks of an interrupted classification.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from galbench.data.catalog import Catalog, read_catalog, release_pages, write_catalog
from galbench.data.tensors import prepare_images
from galbench.errors import GalbenchError
from galbench.fileio import atomic_path, file_sha256, write_json_atomic
from galbench.inference.export import deployed_from_checkpoint, read_metadata
from galbench.models.weights import load_checkpoint

CHUNK_ROWS = 8192
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def provider_options(available: list[str], engine_cache: Path, batch_size: int, input_size: int,
                     device_id: int = 0) -> list[tuple[str, dict]]:
    """ONNX Runtime providers in order of speed, with their options, among those installed."""
    shape = f"3x{input_size}x{input_size}"
    wanted = [
        ("TensorrtExecutionProvider", {
            "device_id": device_id, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(engine_cache), "trt_timing_cache_enable": True,
            # explicit profiles: one engine serves every batch size up to batch_size, never rebuilt
            "trt_profile_min_shapes": f"images:1x{shape}", "trt_profile_opt_shapes": f"images:{batch_size}x{shape}",
            "trt_profile_max_shapes": f"images:{batch_size}x{shape}"}),
        ("CUDAExecutionProvider", {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC",
                                   "do_copy_in_default_stream": True}),
        ("CPUExecutionProvider", {}),
    ]
    return [(name, options) for name, options in wanted if name in available]


class OnnxRuntimeBackend:
    """An ONNX Runtime session on the fastest installed provider; I/O binding on CUDA."""

    name = "onnxruntime"

    def __init__(self, path: Path, batch_size: int, input_size: int):
        import onnxruntime as ort

        chosen = provider_options(ort.get_available_providers(), path.parent / "trt-engines", batch_size, input_size)
        try:
            self.session = ort.InferenceSession(str(path), providers=[name for name, _ in chosen],
                                                provider_options=[options for _, options in chosen])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise GalbenchError(f"ONNX Runtime cannot load the model ({str(exc).splitlines()[0][:120]})",
                                where=str(path)) from None
        self.providers = self.session.get_providers()
        self.on_gpu = any(p in GPU_PROVIDERS for p in self.providers)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.on_gpu:  # keep outputs on the device until asked for: one copy in, one copy out
            binding = self.session.io_binding()
            binding.bind_cpu_input("images", images)
            binding.bind_output("probabilities", "cuda")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        return self.session.run(["probabilities"], {"images": images})[0]


class TorchBackend:
    """The checkpoint beside the ONNX file in PyTorch: fp16 channels_last on CUDA, fp32 on the CPU."""

    name = "torch"

    def __init__(self, checkpoint_path: Path, expected_sha256: str, device: torch.device):
        if not checkpoint_path.exists():
            raise GalbenchError("the torch backend needs the checkpoint exported beside the ONNX model",
                                where=str(checkpoint_path), fix="use --backend onnxruntime, or re-export")
        if file_sha256(checkpoint_path) != expected_sha256:
            raise GalbenchError("checkpoint does not match the ONNX model's checkpoint_sha256",
                                where=str(checkpoint_path))
        self.device = device
        self.model = deployed_from_checkpoint(load_checkpoint(checkpoint_path)).to(device)
        self.half = device.type == "cuda"
        if self.half:
            self.model = self.model.half().to(memory_format=torch.channels_last)
            self.model.normalizer.float()
        self.providers = [f"torch {device}{' fp16 channels_last' if self.half else ' fp32'}"]

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(images).to(self.device, non_blocking=True)
        if self.half:
            inputs = self.model.normalizer(batch).half().contiguous(memory_format=torch.channels_last)
            logits = self.model.model(inputs).float()
            return torch.softmax(logits, 1).cpu().numpy()
        return self.model(batch)[1].numpy()


def choose_backend(name: str, model_path: Path, meta: dict, batch_size: int):
    """`auto`: ONNX Runtime where it has a GPU provider, else torch on CUDA, else ONNX Runtime on the CPU."""
    import onnxruntime as ort

    if name == "auto":
        has_gpu_provider = any(p in GPU_PROVIDERS for p in ort.get_available_providers())
        name = "onnxruntime" if has_gpu_provider or not torch.cuda.is_available() else "torch"
    if name == "onnxruntime":
        return OnnxRuntimeBackend(model_path, batch_size, meta["input_size"])
    if name == "torch":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return TorchBackend(model_path.with_suffix(".pt"), meta["checkpoint_sha256"], device)
    raise GalbenchError(f"unknown backend {name!r}", fix="auto, onnxruntime or torch")


@dataclass
class _Source:
    """Where images come from: the IMAGES cube, or a column of image paths relative to the catalog."""

    catalog: Catalog
    size: int
    crop: float
    path_column: str | None
    skip_bad: bool

    def batch(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Prepared uint8 images of rows [start, stop) and a mask of rows that could not be read."""
        if self.path_column is None:
            # copy out of the memory map here, in the prefetch thread, so page faults overlap inference
            rows = np.array(self.catalog.images[start:stop])
            return prepare_images(rows, self.crop, self.size).numpy(), np.zeros(stop - start, bool)
        from galbench.data.importers import load_image

        images = np.zeros((stop - start, 3, self.size, self.size), np.uint8)
        bad = np.zeros(stop - start, bool)
        base = self.catalog.path.parent
        for offset, row in enumerate(range(start, stop)):
            path = base / str(self.catalog.table[self.path_column][row])
            try:
                image = load_image(path).transpose(2, 0, 1)[None]
                images[offset] = prepare_images(image, self.crop, self.size).numpy()[0]
            except (ValueError, OSError) as exc:
                if not self.skip_bad:
                    raise GalbenchError(f"row {row} (objid {self.catalog.table['objid'][row]}): {exc}",
                                        where=str(path), fix="fix the file, or pass --skip-bad to flag the row") from None
                bad[offset] = True
        return images, bad


def _batches(source: _Source, start: int, stop: int, batch_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Batches of [start, stop), the next one prepared in a thread while the caller runs the current one."""
    bounds = [(s, min(s + batch_size, stop)) for s in range(start, stop, batch_size)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(source.batch, *bounds[0]) if bounds else None
        for index, (lo, _) in enumerate(bounds):
            images, bad = pending.result()
            if index + 1 < len(bounds):
                pending = pool.submit(source.batch, *bounds[index + 1])
            yield lo, images, bad


def resolve_model(model: Path | None, run_dir: Path | None) -> Path:
    """The ONNX model: `--model`, or the overall winner that `galbench run` exported into RUN_DIR."""
    if (model is None) == (run_dir is None):
        raise GalbenchError("give exactly one of --model M.onnx or --run RUN_DIR")
    if model is not None:
        return Path(model)
    winner = Path(run_dir) / "export" / "winner.onnx"
    if not winner.exists():
        raise GalbenchError("no exported winner in this run directory", where=str(winner),
                            fix="run the suite to the end, or galbench export a checkpoint")
    return winner


def classify(input_path: str | Path, model: str | Path | None = None, run: str | Path | None = None,
             out: str | Path | None = None, backend: str = "auto", batch_size: int = 256, resume: bool = False,
             skip_bad: bool = False, copy_images: bool = False, progress: Callable[[int], None] | None = None,
             executor: str = "local", address: str | None = None, fetch=None) -> Table:
    """Classify every galaxy of a catalog FITS file; returns the output table (and writes it if `out`).

    `fetch` (an `sdss.CutoutSpec`-like dict: scale, release, base_url, workers) classifies a catalog that has
    only coordinates, fetching and caching its SDSS cutouts first.
    """
    input_path = Path(input_path)
    model_path = resolve_model(Path(model) if model else None, Path(run) if run else None)
    meta = read_metadata(model_path)
    catalog = read_catalog(input_path, require_images=False)
    path_column = None
    fetched_column = None
    if catalog.images is None:
        path_column = next((c for c in ("image_path", "path", "filename") if c in catalog.table.colnames), None)
        if path_column is None and fetch is not None:
            path_column = fetched_column = _fetch_cutouts(catalog, meta, fetch, skip_bad, input_path)
        if path_column is None:
            raise GalbenchError("no IMAGES HDU and no image_path column", where=str(input_path),
                                fix="add an IMAGES HDU or a column image_path of JPEG/PNG/FITS paths, or pass "
                                    "--fetch to fetch SDSS cutouts for its ra/dec")
    if (catalog.labels >= 0).any() and catalog.classes != meta["classes"]:
        raise GalbenchError(f"the catalog's classes ({', '.join(catalog.classes)}) do not match the model's "
                            f"({', '.join(meta['classes'])})",
                            where=str(input_path))
    if batch_size < 1:
        raise GalbenchError("--batch-size must be at least 1")
    if executor == "ray" and backend == "torch":
        raise GalbenchError("the Ray executor classifies with ONNX Runtime", fix="use --backend auto or onnxruntime")
    engine = choose_backend("onnxruntime" if executor == "ray" else backend, model_path, meta, batch_size)
    source = _Source(catalog, meta["input_size"], meta["crop"], path_column, skip_bad)
    n_rows = len(catalog)
    partial = Path(str(out) + ".partial") if out else None
    manifest = {"model_sha256": file_sha256(model_path), "input": str(input_path.resolve()), "rows": n_rows,
                "chunk_rows": CHUNK_ROWS}
    if partial is not None:
        if partial.exists() and not (resume and _manifest_matches(partial, manifest)):
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        write_json_atomic(partial / "manifest.json", manifest)
    probabilities = np.zeros((n_rows, len(meta["classes"])), np.float32)
    bad_rows = np.zeros(n_rows, bool)
    start_wall = time.perf_counter()
    todo = []
    for chunk_start in range(0, n_rows, CHUNK_ROWS):
        chunk_stop = min(chunk_start + CHUNK_ROWS, n_rows)
        done = partial / f"rows_{chunk_start:012d}.npz" if partial else None
        if done is not None and done.exists():
            stored = np.load(done)
            probabilities[chunk_start:chunk_stop], bad_rows[chunk_start:chunk_stop] = stored["p"], stored["bad"]
            if progress:
                progress(chunk_stop - chunk_start)
        else:
            todo.append((chunk_start, chunk_stop))
    if executor == "ray":
        finished = _ray_chunks(todo, source, model_path, meta, batch_size, address, progress)
    else:
        finished = (_local_chunk(engine, source, lo, hi, batch_size, progress) for lo, hi in todo)
    for chunk_start, chunk_stop, chunk_probabilities, chunk_bad in finished:
        probabilities[chunk_start:chunk_stop], bad_rows[chunk_start:chunk_stop] = chunk_probabilities, chunk_bad
        if partial is not None:
            with atomic_path(partial / f"rows_{chunk_start:012d}.npz") as tmp, open(tmp, "wb") as handle:
                np.savez(handle, p=chunk_probabilities, bad=chunk_bad)
    wall = time.perf_counter() - start_wall
    if fetched_column:
        catalog.table.remove_column(fetched_column)
    table = _output_table(catalog.table, meta["classes"], probabilities, bad_rows, skip_bad)
    table.meta.update({"MODELSHA": manifest["model_sha256"],
                       "BACKEND": engine.name + (" on ray" if executor == "ray" else ""),
                       "PROVIDRS": ",".join(engine.providers), "GAL_PER_S": round(n_rows / max(wall, 1e-9), 1),
                       "MODEL": model_path.name})
    if out is not None:
        result = Catalog(table=table, classes=meta["classes"], images=catalog.images if copy_images else None,
                         bands=catalog.bands, pixscale=catalog.pixscale, source=catalog.source)
        write_catalog(out, result, include_images=copy_images)
        shutil.rmtree(partial, ignore_errors=True)
    return table


def _fetch_cutouts(catalog: Catalog, meta: dict, fetch: dict, skip_bad: bool, input_path: Path) -> str:
    """Fetch (or find cached) the SDSS cutouts of a coordinates-only catalog; returns the path column's name."""
    from galbench.data import sdss

    for column in ("ra", "dec"):
        if column not in catalog.table.colnames:
            raise GalbenchError(f"--fetch needs ra and dec columns; '{column}' is missing", where=str(input_path))
    side = int(round(meta["input_size"] / meta["crop"]))  # the model's crop rule then keeps input_size pixels
    spec = sdss.CutoutSpec(width=side, height=side, release=fetch.get("release", "dr17"),
                           base_url=fetch.get("base_url"))
    ra, dec = np.asarray(catalog.table["ra"], float), np.asarray(catalog.table["dec"], float)
    paths, report = sdss.fetch_cutouts(ra, dec, np.full(len(ra), float(fetch.get("scale", 0.4))), spec,
                                       workers=fetch.get("workers", 4), timeout=fetch.get("timeout", 30.0),
                                       retries=fetch.get("retries", 3))
    if report.failed and not skip_bad:
        row, reason = report.failed[0]
        raise GalbenchError(f"{len(report.failed)} cutouts could not be fetched; first: row {row} "
                            f"(objid {catalog.table['objid'][row]}): {reason}", where=str(input_path),
                            fix="pass --skip-bad to flag those rows and go on")
    catalog.table["_cutout_path"] = [str(path) if path else "/nonexistent/not-fetched" for path in paths]
    return "_cutout_path"


def _local_chunk(engine, source: _Source, start: int, stop: int, batch_size: int, progress):
    """Classify rows [start, stop) here, batch by batch; returns (start, stop, probabilities, bad)."""
    parts, bads = [], []
    for lo, images, bad in _batches(source, start, stop, batch_size):
        parts.append(engine(images))
        bads.append(bad)
        if source.path_column is None:
            release_pages(source.catalog.images, lo, lo + len(images))
        if progress:
            progress(len(images))
    return start, stop, np.concatenate(parts), np.concatenate(bads)


def _remote_classify(model_bytes: bytes, input_size: int, batch_size: int, images: np.ndarray) -> np.ndarray:
    """Body of a Ray task: ONNX Runtime on one shard of prepared images."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="galbench-classify-") as work:
        path = Path(work) / "model.onnx"
        path.write_bytes(model_bytes)
        engine = OnnxRuntimeBackend(path, batch_size, input_size)
        return np.concatenate([engine(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def _ray_chunks(todo, source: _Source, model_path: Path, meta: dict, batch_size: int, address, progress):
    """Classify shards as Ray tasks where workers are free; yield them in row order as they complete."""
    from galbench.cluster import connect_ray

    ray = connect_ray(address)
    remote = ray.remote(num_cpus=1)(_remote_classify)
    model_ref = ray.put(model_path.read_bytes())
    in_flight = max(2, int(ray.cluster_resources().get("CPU", 2)))
    pending: dict = {}
    finished: dict[int, tuple] = {}
    queue = list(todo)
    next_index = 0
    while queue or pending:
        while queue and len(pending) < in_flight:
            start, stop = queue.pop(0)
            images, bad = source.batch(start, stop)
            pending[remote.remote(model_ref, meta["input_size"], batch_size, images)] = (start, stop, bad)
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            start, stop, bad = pending.pop(ref)
            finished[start] = (start, stop, ray.get(ref), bad)
            if progress:
                progress(stop - start)
        while next_index < len(todo) and todo[next_index][0] in finished:
            yield finished.pop(todo[next_index][0])
            next_index += 1


def _manifest_matches(partial: Path, manifest: dict) -> bool:
    try:
        return json.loads((partial / "manifest.json").read_text()) == manifest
    except (OSError, ValueError):
        return False


def _output_table(table: Table, classes: list[str], probabilities: np.ndarray, bad: np.ndarray,
                  flag_bad: bool) -> Table:
    """The input's columns plus pred_label, pred_class, prob_<class>, pred_confidence (and bad_image)."""
    result = table.copy(copy_data=False)
    labels = probabilities.argmax(1).astype(np.int16)
    labels[bad] = -1
    result["pred_label"] = labels
    result["pred_class"] = np.asarray([classes[k] if k >= 0 else "" for k in labels], dtype=str)
    for index, name in enumerate(classes):
        result[f"prob_{name.replace('-', '_')}"] = probabilities[:, index]
    result["pred_confidence"] = np.where(bad, np.float32(np.nan), probabilities.max(1))
    if flag_bad:
        result["bad_image"] = bad
    return result
