"""`galbench classify`: a catalog in, the same catalog with predictions out, in batches of any catalog size.

Backends: ONNX Runtime (TensorRT, then CUDA, then CPU: the fastest installed provider first) and PyTorch
(CUDA fp16 channels_last, or CPU), both computing what the exported graph computes (temperature, rotation
averaging). Images already at the model's size go to the backend straight from the catalog's memory-mapped
cube, no copy; where a batch takes work to make (decoding image files, resizing), a thread makes the next
while the backend runs the current one. Another thread writes finished chunks to OUT.partial/, and image
pages are dropped once used, so memory stays flat as the catalog grows. The output is written to
a temporary file and renamed at the end; `resume` reuses the finished chunks of an interrupted run if the
model, the settings and the input's content fingerprint are unchanged, and refuses otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from astropy.table import MaskedColumn, Table

from galbench.data.catalog import release_pages
from galbench.data.tensors import prepare_images
from galbench.errors import GalbenchError
from galbench.fileio import atomic_path, file_sha256, write_json_atomic
from galbench.inference.export import deployed_from_metadata, read_metadata
from galbench.inference.inputs import InputCatalog, fingerprint, read_input
from galbench.inference.output import check_writable, mixin_columns, write_output
from galbench.models.weights import load_checkpoint

CHUNK_ROWS = 8192
RELEASE_BYTES = 32 * 2**20  # finished image rows are dropped from memory in runs of this size, not per batch
MAX_LANES = 16  # batches in flight at most (cpu_lanes): each holds its own activations
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


def cpu_lanes(providers: list[str], precision: str) -> int:
    """How many batches an ONNX Runtime session runs at once, each on one thread of its own.

    An int8 model on the CPU alone runs one batch per usable core (at most MAX_LANES): ONNX Runtime's int8
    convolution splits each image of a batch across the session's threads and waits for them before the next
    image (qlinearconv.cc), over a thousand waits per batch; a batch at a time, the int8 pass time toggled
    between two levels 1.5x apart on the 2-core CI machine, and a batch per core held the fast one. fp32 was
    at most 10% faster a batch per core there at 64 px, and no faster at 112 px, while each lane holds its
    own activations; so fp32 and every GPU session keep one batch at a time, split among the session's own
    threads.
    """
    if precision != "int8" or any(name in GPU_PROVIDERS for name in providers):
        return 1
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, min(len(usable), MAX_LANES))


def session_options(providers: list[str], threads: int = 0):
    """ONNX Runtime session options for these providers; `threads` per run (0: ONNX Runtime's choice).

    On the CPU alone, without the memory pattern: ONNX Runtime plans it in a session's first run and
    allocates it (fresh pages, faulted in) in the second, which made that batch twice as slow as the rest;
    later batches run at the same speed without it (measured on the 2-core CI machine).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not any(name in GPU_PROVIDERS for name in providers):
        options.enable_mem_pattern = False
    options.intra_op_num_threads = threads
    return options


class OnnxRuntimeBackend:
    """An ONNX Runtime session on the fastest of `available` providers (default: every one installed); I/O
    binding on CUDA. `lanes` is how many calls it wants at once (cpu_lanes unless given), from as many
    threads; each call runs on `threads` threads (default: one where there are several lanes, else ONNX
    Runtime's choice). ONNX Runtime allows concurrent runs of one session; lanes are only ever more than one
    on the CPU."""

    name = "onnxruntime"

    def __init__(self, path: Path, batch_size: int, input_size: int, outputs: list[str], precision: str = "fp32",
                 lanes: int | None = None, threads: int | None = None, available: list[str] | None = None):
        import onnxruntime as ort

        chosen = provider_options(available or ort.get_available_providers(), path.parent / "trt-engines",
                                  batch_size, input_size)
        names = [name for name, _ in chosen]
        self.lanes = cpu_lanes(names, precision) if lanes is None else lanes
        threads = (1 if self.lanes > 1 else 0) if threads is None else threads
        try:
            self.session = ort.InferenceSession(str(path), session_options(names, threads), providers=names,
                                                provider_options=[options for _, options in chosen])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise GalbenchError(f"ONNX Runtime cannot load the model ({str(exc).splitlines()[0][:120]})",
                                where=str(path)) from None
        self.providers = self.session.get_providers()
        self.on_gpu = any(p in GPU_PROVIDERS for p in self.providers)
        self.outputs = outputs

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self.on_gpu:  # keep outputs on the device until asked for: one copy in, one copy out
            binding = self.session.io_binding()
            binding.bind_cpu_input("images", images)
            for name in self.outputs:
                binding.bind_output(name, "cuda")
            self.session.run_with_iobinding(binding)
            return dict(zip(self.outputs, binding.copy_outputs_to_cpu(), strict=True))
        return dict(zip(self.outputs, self.session.run(self.outputs, {"images": images}), strict=True))


class TorchBackend:
    """The checkpoint beside the ONNX file in PyTorch: fp16 channels_last on CUDA, fp32 on the CPU."""

    name = "torch"

    def __init__(self, checkpoint_path: Path, meta: dict, device: torch.device, outputs: list[str]):
        if not checkpoint_path.exists():
            raise GalbenchError("the torch backend needs the checkpoint exported beside the ONNX model",
                                where=str(checkpoint_path), fix="use --backend onnxruntime, or re-export")
        if file_sha256(checkpoint_path) != meta["checkpoint_sha256"]:
            raise GalbenchError("checkpoint does not match the ONNX model's checkpoint_sha256",
                                where=str(checkpoint_path))
        self.device = device
        self.model = deployed_from_metadata(load_checkpoint(checkpoint_path), meta).to(device)
        self.half = device.type == "cuda"
        if self.half:
            self.model = self.model.half().to(memory_format=torch.channels_last)
            self.model.normalizer.float()
        self.providers = [f"torch {device}{' fp16 channels_last' if self.half else ' fp32'}"]
        self.outputs = outputs

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        # batches may be read-only views of the memory-mapped catalog, which torch will not wrap
        batch = torch.from_numpy(images if images.flags.writeable else np.array(images)).to(self.device,
                                                                                          non_blocking=True)
        computed = dict(zip(("logits", "probabilities", "embeddings", "agreement"), self.model(batch), strict=True))
        return {name: computed[name].float().cpu().numpy() for name in self.outputs}


def choose_backend(name: str, model_path: Path, meta: dict, batch_size: int, outputs: list[str]):
    """`auto`: ONNX Runtime where it has a GPU provider, else torch on CUDA, else ONNX Runtime on the CPU."""
    import onnxruntime as ort

    if name == "auto":
        has_gpu_provider = any(p in GPU_PROVIDERS for p in ort.get_available_providers())
        name = "onnxruntime" if has_gpu_provider or not torch.cuda.is_available() else "torch"
    if name == "onnxruntime":
        return OnnxRuntimeBackend(model_path, batch_size, meta["input_size"], outputs, meta.get("precision", "fp32"))
    if name == "torch":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return TorchBackend(model_path.with_suffix(".pt"), meta, device, outputs)
    raise GalbenchError(f"unknown backend {name!r}", fix="auto, onnxruntime or torch")


@dataclass
class _Source:
    """Where images come from: the IMAGES cube, or a column of image paths relative to the catalog.

    An image file is prepared as its training image was: stretched (FITS) and cropped and resized (Lanczos)
    as `galbench data import` did (`resampling`'s import_crop and import_size; neither for fetched cutouts,
    which are fetched at the model's input scale), then cropped and resized as every catalog image is.
    """

    catalog: InputCatalog
    size: int
    crop: float
    path_column: str | None
    skip_bad: bool
    stretch: dict
    import_crop: float | int | None = None
    import_size: int | None = None

    @property
    def as_stored(self) -> bool:
        """Whether batches are the catalog's own rows: an image cube already at the model's size and crop."""
        images = self.catalog.images
        return (self.path_column is None and self.crop >= 1 and images.shape[-1] == self.size
                and images.shape[-2] == self.size)

    def batch(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prepared uint8 images of rows [start, stop), a mask of unreadable rows, filled pixels per row."""
        filled = np.zeros(stop - start, np.int32)
        if self.path_column is None:
            rows = self.catalog.images[start:stop]
            if self.as_stored:  # the memory map itself, no copy
                return rows, np.zeros(stop - start, bool), filled
            return prepare_images(np.asarray(rows), self.crop, self.size).numpy(), np.zeros(stop - start, bool), filled
        from galbench.data.importers import crop_and_resize, load_image

        images = np.zeros((stop - start, 3, self.size, self.size), np.uint8)
        bad = np.zeros(stop - start, bool)
        base = self.catalog.path.parent
        for offset, row in enumerate(range(start, stop)):
            path = base / str(self.catalog.table[self.path_column][row])
            try:
                image, filled[offset] = load_image(path, self.stretch)
                imported = crop_and_resize(image, self.import_crop, self.import_size).transpose(2, 0, 1)
                images[offset] = prepare_images(imported[None], self.crop, self.size)[0].numpy()
            except (ValueError, OSError) as exc:
                if not self.skip_bad:
                    raise GalbenchError(f"{self.catalog.row_name(row)}: {exc}", where=str(path),
                                        fix="fix the file, or pass --skip-bad to flag the row") from None
                bad[offset] = True
        return images, bad, filled


def _batches(source: _Source, start: int, stop: int, batch_size: int) -> Iterator[tuple[tuple[int, int], tuple]]:
    """The batches of [start, stop), in order: ((lo, hi), (images, bad, filled))."""
    bounds = [(s, min(s + batch_size, stop)) for s in range(start, stop, batch_size)]
    return zip(bounds, _prepared(source, bounds), strict=True)


_END = object()


def in_order(work: Callable, items: Iterable, lanes: int) -> Iterator[tuple]:
    """(item, work(item)) for each item, in order, running `lanes` at once in threads (in the caller's thread
    for one lane). The next item is drawn only once a lane is free, so at most `lanes` items are ever drawn and
    unfinished. When work raises, the error comes out at that item's turn; items already running by then
    (up to lanes - 1 after it) run to their end first, and nothing more is drawn."""
    if lanes <= 1:
        for item in items:
            yield item, work(item)
        return
    running: deque = deque()
    with ThreadPoolExecutor(max_workers=lanes) as pool:
        try:
            pending = iter(items)
            while True:
                if len(running) == lanes:
                    done, future = running.popleft()
                    yield done, future.result()
                item = next(pending, _END)
                if item is _END:
                    break
                running.append((item, pool.submit(work, item)))
            while running:
                done, future = running.popleft()
                yield done, future.result()
        finally:  # an error, or the caller stopped: nothing more is drawn, and what runs is waited for
            for _, future in running:
                future.cancel()


def _prepared(source: _Source, bounds: list[tuple[int, int]]) -> Iterator[tuple]:
    """The batches of `bounds`, in order.

    Batches that take work to make (decoding image files, resizing) are made in a thread, the next while the
    caller runs the current one. Batches that are the catalog's own rows are views of its memory map, made
    here: there is nothing to overlap, and a thread mapping their pages in ahead only takes a core from the
    backend, which keeps both of a small machine's cores busy (measured slower than letting it fault them in).
    """
    if source.as_stored:
        yield from (source.batch(lo, hi) for lo, hi in bounds)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(source.batch, *bounds[0]) if bounds else None
        for index in range(len(bounds)):
            prepared = pending.result()
            if index + 1 < len(bounds):
                pending = pool.submit(source.batch, *bounds[index + 1])
            yield prepared


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


def wanted_outputs(meta: dict, embeddings: bool, model_path: Path) -> list[str]:
    """The graph outputs classify needs: probabilities, agreement under rotation averaging, embeddings."""
    outputs = ["probabilities"] + (["agreement"] if meta["tta_views"] > 1 else [])
    if embeddings:
        if "embeddings" not in meta["outputs"]:
            raise GalbenchError("this model has no embeddings output (exported by an older galbench)",
                                where=str(model_path), fix="export it again with galbench export")
        outputs.append("embeddings")
    return outputs


def classify(input_path: str | Path, model: str | Path | None = None, run: str | Path | None = None,
             out: str | Path | None = None, backend: str = "auto", batch_size: int = 256, resume: bool = False,
             skip_bad: bool = False, copy_images: bool = False, progress: Callable[[int], None] | None = None,
             executor: str = "local", address: str | None = None, fetch=None, embeddings: bool = False) -> Table:
    """Classify every galaxy of a catalog; returns the output table (and writes it if `out`).

    `fetch` (an `sdss.CutoutSpec`-like dict: scale, release, base_url, workers) classifies a catalog that has
    only coordinates, fetching and caching its SDSS cutouts first, at the model's input pixel scale unless
    `scale` is given. `embeddings` adds the penultimate-layer vector of every galaxy as column `embedding`.
    """
    input_path = Path(input_path)
    model_path = resolve_model(Path(model) if model else None, Path(run) if run else None)
    meta = read_metadata(model_path)
    outputs = wanted_outputs(meta, embeddings, model_path)
    if out is not None:
        check_writable(Path(out), embeddings)
    if batch_size < 1:
        raise GalbenchError("--batch-size must be at least 1")
    if executor == "ray" and backend == "torch":
        raise GalbenchError("the Ray executor classifies with ONNX Runtime", fix="use --backend auto or onnxruntime")
    # the backend's session is built while the catalog is read: neither needs the other, and each keeps a core busy
    starting = ThreadPoolExecutor(max_workers=1)
    pending_engine = starting.submit(choose_backend, "onnxruntime" if executor == "ray" else backend, model_path, meta,
                                     batch_size, outputs)
    try:
        catalog = read_input(input_path)
        if out is not None:
            check_writable(Path(out), embeddings, mixin_columns(catalog.table))
        path_column = catalog.path_column if catalog.images is None else None
        fetched_column = None
        if catalog.images is None and path_column is None:
            if fetch is not None:
                path_column = fetched_column = _fetch_cutouts(catalog, meta, fetch, skip_bad, input_path)
            else:
                raise GalbenchError("no IMAGES HDU and no image_path column", where=str(input_path),
                                    fix="add an IMAGES HDU or a column image_path of JPEG/PNG/FITS paths, or pass "
                                        "--fetch to fetch SDSS cutouts for its ra/dec")
        labels = np.asarray(catalog.table["label"]) if "label" in catalog.table.colnames else None
        if (labels is not None and catalog.classes is not None and (labels >= 0).any()
                and catalog.classes != meta["classes"]):
            raise GalbenchError(f"the catalog's classes ({', '.join(catalog.classes)}) do not match the model's "
                                f"({', '.join(meta['classes'])})",
                                where=str(input_path))
        if copy_images and catalog.images is None:
            raise GalbenchError("--copy-images needs a catalog with an IMAGES HDU", where=str(input_path))
        engine = pending_engine.result()
    except BaseException:
        # a bad catalog is said at once, not after the session (a TensorRT engine build can take minutes)
        starting.shutdown(wait=False, cancel_futures=True)
        raise
    starting.shutdown()
    imported = {} if fetched_column else meta["resampling"]  # fetched cutouts come at the input's scale already
    source = _Source(catalog, meta["input_size"], meta["crop"], path_column, skip_bad, meta["stretch"],
                     imported.get("import_crop"), imported.get("import_size"))
    n_rows = len(catalog)
    model_sha256 = file_sha256(model_path)
    partial = Path(str(out) + ".partial") if out else None
    if partial is not None:
        manifest = {"model_sha256": model_sha256, "input": str(input_path.resolve()), "rows": n_rows,
                    "chunk_rows": CHUNK_ROWS, "outputs": outputs, "input_fingerprint": fingerprint(catalog)}
        _prepare_partial(partial, manifest, resume)
    results = _Results(n_rows)
    start_wall = time.perf_counter()
    todo = []
    for chunk_start in range(0, n_rows, CHUNK_ROWS):
        chunk_stop = min(chunk_start + CHUNK_ROWS, n_rows)
        done = partial / f"rows_{chunk_start:012d}.npz" if partial else None
        if done is not None and done.exists():
            with np.load(done) as stored:
                results.put(chunk_start, dict(stored))
            if progress:
                progress(chunk_stop - chunk_start)
        else:
            todo.append((chunk_start, chunk_stop))
    if executor == "ray":
        finished = _ray_chunks(todo, source, model_path, meta, batch_size, outputs, address, progress)
    else:
        finished = (_local_chunk(engine, source, lo, hi, batch_size, progress) for lo, hi in todo)
    with ThreadPoolExecutor(max_workers=1) as writer:  # chunk files are written while the next chunk runs
        pending = []
        for chunk_start, chunk in finished:
            results.put(chunk_start, chunk)
            if partial is not None:
                pending.append(writer.submit(_save_chunk, partial / f"rows_{chunk_start:012d}.npz", chunk))
        for future in pending:
            future.result()
    wall = time.perf_counter() - start_wall
    if fetched_column:
        catalog.table.remove_column(fetched_column)
    table = _output_table(catalog.table, meta, results, skip_bad, path_column is not None)
    model_name = " ".join(f"{key} {meta[key]}" for key in ("variant", "seed", "run") if key in meta)
    table.meta.update({"MODELSHA": model_sha256, "BACKEND": engine.name + (" on ray" if executor == "ray" else ""),
                       "PROVIDRS": ",".join(engine.providers), "GAL_PER_S": round(n_rows / max(wall, 1e-9), 1),
                       "MODEL": model_name or model_path.name, "MODELFIL": model_path.name,
                       "TEMPERAT": meta["temperature"], "TTAVIEWS": meta["tta_views"],
                       "PRECISN": meta.get("precision", "fp32"), "STRETCH": meta["stretch"]["kind"]})
    if path_column is not None:
        table.meta["NANFILLD"] = int(results.filled.sum())
    if out is not None:
        history = [f"galbench classify {input_path.name}: model {model_path.name} "
                   f"({meta.get('model', '?')}, {model_name or 'no run recorded'}), sha256 {model_sha256[:16]}",
                   f"{engine.name} ({','.join(engine.providers)}), temperature {meta['temperature']:.4g}, "
                   f"{meta['tta_views']} view(s), {meta.get('precision', 'fp32')}, {n_rows} rows"]
        images = fits.open(input_path, memmap=True)["IMAGES"] if copy_images else None
        cards = {key: table.meta[key] for key in ("MODEL", "MODELFIL", "MODELSHA", "BACKEND", "PROVIDRS",
                                                  "GAL_PER_S", "TEMPERAT", "TTAVIEWS", "PRECISN", "STRETCH",
                                                  "NANFILLD") if key in table.meta}
        cards["CLASSES"] = ",".join(meta["classes"])
        body = table.copy(copy_data=False)
        for key in cards:
            body.meta.pop(key, None)
        write_output(out, body, catalog.primary_header, cards, history, images)
        shutil.rmtree(partial, ignore_errors=True)
    return table


class _Results:
    """Per-row outputs of the whole catalog, filled chunk by chunk (allocated at the first chunk)."""

    def __init__(self, rows: int):
        self.rows = rows
        self.arrays: dict[str, np.ndarray] = {}

    def put(self, start: int, chunk: dict[str, np.ndarray]) -> None:
        for name, values in chunk.items():
            if name not in self.arrays:
                self.arrays[name] = np.zeros((self.rows, *values.shape[1:]), values.dtype)
            self.arrays[name][start:start + len(values)] = values

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["arrays"][name]
        except KeyError:
            raise AttributeError(name) from None


def _save_chunk(path: Path, chunk: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **chunk)


def _prepare_partial(partial: Path, manifest: dict, resume: bool) -> None:
    """Start OUT.partial/ afresh, or keep it for --resume where it was made from the same model and input."""
    if partial.exists() and resume:
        try:
            stored = json.loads((partial / "manifest.json").read_text())
        except (OSError, ValueError):
            stored = {}
        differs = [key for key in manifest if stored.get(key) != manifest[key]]
        if differs:
            what = {"input_fingerprint": "the input file's content", "model_sha256": "the model",
                    "rows": "the row count", "input": "the input path"}
            raise GalbenchError(f"cannot resume: {', '.join(what.get(k, k) for k in differs)} changed since the "
                                "partial results were computed", where=str(partial),
                                fix="drop --resume to classify from the start")
    elif partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    write_json_atomic(partial / "manifest.json", manifest)


def _fetch_cutouts(catalog: InputCatalog, meta: dict, fetch: dict, skip_bad: bool, input_path: Path) -> str:
    """Fetch (or find cached) the SDSS cutouts of a coordinates-only catalog; returns the path column's name."""
    from galbench.data import sdss

    for column in ("ra", "dec"):
        if column not in catalog.table.colnames:
            raise GalbenchError(f"--fetch needs ra and dec columns; '{column}' is missing", where=str(input_path))
    side = int(round(meta["input_size"] / meta["crop"]))  # the model's crop rule then keeps input_size pixels
    spec = sdss.CutoutSpec(width=side, height=side, release=fetch.get("release", "dr17"),
                           base_url=fetch.get("base_url"))
    ra, dec = np.asarray(catalog.table["ra"], float), np.asarray(catalog.table["dec"], float)
    # the training images' pixel scale where the model records it, so fetched galaxies look the same size
    scale = fetch.get("scale") or float(meta.get("input_pixscale_arcsec", sdss_default_scale()))
    paths, report = sdss.fetch_cutouts(ra, dec, np.full(len(ra), scale), spec,
                                       workers=fetch.get("workers", 4), timeout=fetch.get("timeout", 30.0),
                                       retries=fetch.get("retries", 3))
    if report.failed and not skip_bad:
        row, reason = report.failed[0]
        raise GalbenchError(f"{len(report.failed)} cutouts could not be fetched; first: {catalog.row_name(row)}: "
                            f"{reason}", where=str(input_path),
                            fix="pass --skip-bad to flag those rows and go on")
    catalog.table["_cutout_path"] = [str(path) if path else "/nonexistent/not-fetched" for path in paths]
    return "_cutout_path"


def sdss_default_scale() -> float:
    """The SkyServer cutout scale used when a model records no pixel scale (arcsec/pixel)."""
    return 0.4


def _local_chunk(engine, source: _Source, start: int, stop: int, batch_size: int, progress):
    """Classify rows [start, stop) here, batch by batch, `engine.lanes` batches at once; returns
    (start, {output: values, bad, filled}). Rows read through the catalog's memory map are dropped from memory
    once their batch and every batch before it are done, in runs of RELEASE_BYTES of catalog rows."""
    parts: list[dict[str, np.ndarray]] = []
    images_on_disk, released = source.catalog.images, start
    batches = _batches(source, start, stop, batch_size)
    for ((_, hi), (images, bad, filled)), outputs in in_order(lambda batch: engine(batch[1][0]), batches,
                                                              getattr(engine, "lanes", 1)):
        parts.append({**outputs, "bad": bad, "filled": filled})
        if progress:
            progress(len(images))
        if source.path_column is None and ((hi - released) * images_on_disk[0].nbytes >= RELEASE_BYTES or hi == stop):
            release_pages(images_on_disk, released, hi)
            released = hi
    return start, {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _remote_classify(model_bytes: bytes, input_size: int, batch_size: int, outputs: list[str],
                     images: np.ndarray) -> dict[str, np.ndarray]:
    """Body of a Ray task: ONNX Runtime on one shard of prepared images, one batch at a time on one thread (a
    task holds one CPU; the cluster's parallelism is its tasks), whatever the model's precision."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="galbench-classify-") as work:
        path = Path(work) / "model.onnx"
        path.write_bytes(model_bytes)
        engine = OnnxRuntimeBackend(path, batch_size, input_size, outputs, lanes=1, threads=1)
        parts = [engine(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return {name: np.concatenate([part[name] for part in parts]) for name in outputs}


def _ray_chunks(todo, source: _Source, model_path: Path, meta: dict, batch_size: int, outputs: list[str], address,
                progress):
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
            images, bad, filled = source.batch(start, stop)
            pending[remote.remote(model_ref, meta["input_size"], batch_size, outputs, images)] = (start, stop, bad,
                                                                                                filled)
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            start, stop, bad, filled = pending.pop(ref)
            finished[start] = (start, {**ray.get(ref), "bad": bad, "filled": filled})
            if progress:
                progress(stop - start)
        while next_index < len(todo) and todo[next_index][0] in finished:
            yield finished.pop(todo[next_index][0])
            next_index += 1


def _output_table(table: Table, meta: dict, results: _Results, flag_bad: bool, from_files: bool) -> Table:
    """The input's columns (units, nulls, descriptions kept) plus the prediction columns.

    pred_label (TNULL -1 where the image was bad), pred_class, prob_<class>, pred_confidence, and where they
    apply pred_agreement (rotation averaging), bad_image (--skip-bad), filled_pixels (image files) and
    embedding (--embeddings).
    """
    classes, views = meta["classes"], meta["tta_views"]
    probabilities, bad = results.probabilities, results.bad.astype(bool)
    result = table.copy(copy_data=False)
    labels = probabilities.argmax(1).astype(np.int16)
    labels[bad] = -1
    result["pred_label"] = MaskedColumn(labels, mask=bad, fill_value=-1,
                                        description="predicted class index (null where the image was unusable)")
    result["pred_class"] = np.asarray(classes + [""])[labels]
    result["pred_class"].description = "predicted class name (empty where the image was unusable)"
    how = (f"mean over {views} rotated/flipped views of " if views > 1 else "") + \
        f"softmax(logits / {meta['temperature']:.4g})"
    for index, name in enumerate(classes):
        result[f"prob_{name.replace('-', '_')}"] = probabilities[:, index]
        result[f"prob_{name.replace('-', '_')}"].description = f"probability of {name}: {how}"
    result["pred_confidence"] = np.where(bad, np.float32(np.nan), probabilities.max(1))
    result["pred_confidence"].description = "probability of the predicted class"
    if views > 1:
        result["pred_agreement"] = np.where(bad, np.float32(np.nan), results.agreement)
        result["pred_agreement"].description = f"fraction of the {views} views whose argmax is pred_label"
    if flag_bad:
        result["bad_image"] = bad
        result["bad_image"].description = "true where the image could not be read"
    if from_files:
        result["filled_pixels"] = results.filled.astype(np.int32)
        result["filled_pixels"].description = "non-finite FITS pixel values filled before stretching"
    if "embeddings" in results.arrays:
        result["embedding"] = results.embeddings.astype(np.float32)
        result["embedding"].description = "penultimate-layer vector (view-averaged)"
    return result
