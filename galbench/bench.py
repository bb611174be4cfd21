"""Figures that need more than a unit benchmark: how cost grows, and the GPU figures.

    python -m galbench.bench scaling [--out reports/benchmarks]   classify 1k/10k/100k rows, train 1k-10k
    python -m galbench.bench gpu [--out reports/benchmarks]       training, suite and classify figures on CUDA
    python -m galbench.bench tta RUN_DIR [--out reports/benchmarks]  rotation averaging and int8 on a run's test split

Each writes a JSON file named after the machine (and scaling a log-log plot) into --out.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from galbench.data.catalog import Catalog, write_catalog
from galbench.errors import GalbenchError
from galbench.experiment.runner import cpu_name
from galbench.fileio import write_json_atomic

# Peak memory is the process's VmHWM: unlike getrusage's ru_maxrss, it is not inherited from the parent
# across fork and exec, so the parent's large test catalogs do not count.
CLASSIFY_SCRIPT = """
import sys, time
from galbench.inference.classify import classify
start = time.perf_counter()
classify(sys.argv[1], model=sys.argv[2], out=sys.argv[3], backend=sys.argv[4], batch_size=int(sys.argv[5]))
seconds = time.perf_counter() - start
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(seconds, peak)
"""


def machine_name() -> str:
    """A file-name-safe name of the device the figures are measured on."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_name()
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def tiled(source: Catalog, rows: int) -> Catalog:
    """`rows` rows made by repeating a source catalog (timing does not depend on the content)."""
    index = np.arange(rows) % len(source)
    table = source.table[index]
    table["objid"] = np.arange(rows, dtype=np.int64)
    return Catalog(table, source.classes, np.asarray(source.images)[index], source.bands, source.pixscale, "tiled")


def _seed_catalog(size: int, n: int = 1000) -> Catalog:
    from galbench.data.synth import SynthParams, synthesize

    return synthesize(SynthParams(n=n, size=size, seed=0))


def _model(folder: Path, sample: np.ndarray, size: int, classes: list[str], model: str) -> Path:
    from galbench.inference.export import export_onnx
    from galbench.models.registry import build_model
    from galbench.models.weights import CHECKPOINT_FORMAT

    torch.manual_seed(0)
    network = build_model(model, len(classes))
    torch.save({"format": CHECKPOINT_FORMAT, "model": model, "classes": classes, "image_size": size, "crop": 1.0,
                "state_dict": network.state_dict(), "meta": {}}, folder / "model.pt")
    export_onnx(folder / "model.pt", folder / "model.onnx", sample[:32])
    return folder / "model.onnx"


def classify_scaling(rows_list, folder: Path, source: Catalog, model_path: Path, backend: str, batch: int):
    """Wall time and peak memory of `galbench classify`, each size in a fresh process."""
    figures = []
    for rows in rows_list:
        path = folder / f"catalog-{rows}.fits"
        write_catalog(path, tiled(source, rows))
        output = subprocess.run([sys.executable, "-c", CLASSIFY_SCRIPT, str(path), str(model_path),
                                 str(folder / f"out-{rows}.fits"), backend, str(batch)],
                                check=True, capture_output=True, text=True).stdout.split()
        seconds, peak_kib = float(output[-2]), int(output[-1])
        figures.append({"rows": rows, "seconds": seconds, "galaxies_per_second": rows / seconds,
                        "peak_rss_mb": peak_kib / 1024, "file_mb": path.stat().st_size / 1e6})
        path.unlink()
        (folder / f"out-{rows}.fits").unlink()
        print(f"classify {rows:>7,} rows: {seconds:7.2f} s, {rows / seconds:9,.0f} galaxies/s, "
              f"peak RSS {peak_kib / 1024:7.0f} MB", flush=True)
    return figures


def train_scaling(rows_list, source: Catalog, model: str, size: int, device: torch.device, batch: int):
    """Seconds for one training epoch against the number of galaxies."""
    from galbench.data.tensors import SplitImages
    from galbench.experiment.suite import AugmentSection, TrainSection
    from galbench.experiment.train import RunSpec, Trainer

    figures = []
    for rows in rows_list:
        catalog = tiled(source, rows)
        split = SplitImages.build(catalog.images, np.arange(rows), catalog.labels, 1.0, size, device, 2**34)
        with tempfile.TemporaryDirectory() as work:
            spec = RunSpec("bench", 0, model, catalog.classes,
                           TrainSection(optimizer="adamw", lr=1e-3, batch_size=batch, epochs=100, device=str(device),
                                        precision="auto"),
                           AugmentSection(), size, 1.0, [])
            trainer = Trainer(spec, split, split, Path(work), None)
            trainer._eval_point = lambda step: None
            trainer.begin_session()
            trainer.train_one_epoch()  # warm-up
            start = trainer.watch.now()
            trainer.train_one_epoch()
            seconds = trainer.watch.now() - start
        figures.append({"rows": rows, "seconds": seconds, "images_per_second": rows / seconds})
        print(f"train epoch {rows:>6,} galaxies: {seconds:7.2f} s, {rows / seconds:8,.0f} images/s", flush=True)
    return figures


def plot_scaling(result: dict, path: Path) -> None:
    """Log-log plot of time against rows for classification and training, with memory on a second axis."""
    from galbench.analysis.plots import figure_png, plt, save_png

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("classify", "classify (FITS to FITS)"), ("train", "train one epoch")):
        rows = [f["rows"] for f in result[key]]
        seconds = [f["seconds"] for f in result[key]]
        left.loglog(rows, seconds, "o-", label=label)
    reference = np.asarray([1e3, 1e5])
    first = result["classify"][0]
    left.loglog(reference, first["seconds"] * reference / first["rows"], "k:", label="linear")
    left.set_xlabel("galaxies")
    left.set_ylabel("seconds")
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=8)
    right.semilogx([f["rows"] for f in result["classify"]], [f["peak_rss_mb"] for f in result["classify"]], "o-",
                   label="peak RSS of classify")
    right.semilogx([f["rows"] for f in result["classify"]], [f["file_mb"] for f in result["classify"]], "s--",
                   label="catalog file size")
    right.set_xlabel("galaxies")
    right.set_ylabel("MB")
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=8)
    fig.suptitle(f"how cost grows on {result['device']}", fontsize=9)
    save_png(figure_png(fig), path)


def scaling(out: Path, classify_rows=(1000, 10000, 100000), train_rows=(1000, 3000, 10000)) -> dict:
    """The scaling figures on this machine (CPU unless CUDA is there)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    source = _seed_catalog(64)
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        model_path = _model(folder, np.asarray(source.images), 64, source.classes, "alexnet-small")
        result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else cpu_name(),
                  "torch_threads": torch.get_num_threads(), "model": "alexnet-small", "image_size": 64,
                  "classify": classify_scaling(classify_rows, folder, source, model_path, "auto", 256),
                  "train": train_scaling(train_rows, source, "alexnet-small", 64, device, 64)}
    name = machine_name()
    write_json_atomic(out / f"scaling-{name}.json", result)
    plot_scaling(result, out / f"scaling-{name}.png")
    return result


GPU_PHASES = ("training", "classify", "suite", "training_compiled")


def gpu(out: Path, quick: bool = False, phases: tuple[str, ...] = GPU_PHASES) -> dict:
    """Training (bf16, channels_last, with and without torch.compile), a 10-seed 2-arm suite, classify fp16.

    Phases run cheapest and surest first, compiled training (whose compile time is the least predictable)
    last, and the JSON file is rewritten after each, so a run stopped by a time limit keeps what it measured.
    """
    from galbench.data.tensors import SplitImages

    began = time.perf_counter()
    size, batch = (64, 32) if quick else (224, 512)
    rows = 256 if quick else 8192
    # Both catalogs are simulated before CUDA starts in this process: the simulation forks worker processes,
    # and forking a process that holds a CUDA context and its threads is best avoided.
    bench_suite = _bench_suite(quick)
    if "suite" in phases:
        bench_suite.catalog_file(out)
    source = tiled(_seed_catalog(size, 64 if quick else 1000), rows)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    target = out / f"{machine_name()}.json"
    split = SplitImages.build(source.images, np.arange(rows), source.labels, 1.0, size, device, 2**35)
    result: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else cpu_name(),
                    "torch": torch.__version__, "image_size": size, "batch_size": batch,
                    "phase_seconds": {"data": time.perf_counter() - began}}
    # figures of phases run earlier into the same file (--phases split over runs) are kept
    earlier = json.loads(target.read_text()) if target.exists() else {}
    if any(earlier.get(key) != result[key] for key in ("device", "torch", "image_size", "batch_size")):
        earlier = {}

    def phase(name: str, measure) -> None:
        start = time.perf_counter()
        measure()
        result["phase_seconds"][name] = time.perf_counter() - start
        write_json_atomic(target, {**earlier, **result,
                                   "phase_seconds": {**earlier.get("phase_seconds", {}), **result["phase_seconds"]}})
        print(f"[{time.perf_counter() - began:6.0f} s] {name} done", flush=True)

    def training(compiled: bool) -> None:
        figure = _training_figure(split, source.classes, size, batch, device, compiled, timed_epochs=1 if quick else 3)
        result["training_compiled" if compiled else "training"] = figure
        print(json.dumps(figure), flush=True)

    def classify_figure() -> None:
        with tempfile.TemporaryDirectory() as work:
            folder = Path(work)
            model_path = _model(folder, np.asarray(source.images), size, source.classes, "alexnet")
            figures = classify_scaling([rows], folder, source, model_path, "torch", 64 if quick else 1024)
        result["classify_torch_fp16" if device.type == "cuda" else "classify_torch_cpu"] = figures[0]

    def suite() -> None:
        result["suite"] = _suite_wall_time(bench_suite, device)
        print(json.dumps(result["suite"]), flush=True)

    measures = {"training": lambda: training(False), "classify": classify_figure, "suite": suite,
                "training_compiled": lambda: training(True)}
    for name in phases:
        # torch.compile is measured on CUDA; on the CPU (a --quick check of this code) it would only add minutes
        if name != "training_compiled" or device.type == "cuda":
            phase(name, measures[name])
    return result


def bare_loop(split, model_name: str, num_classes: int, cfg, policy=None):
    """The plainest training loop over a split's batches: index, (augment,) normalise, forward, step.

    It is the baseline galbench's own loop is measured against: the model, optimizer, precision and memory
    format come from the same `cfg`, and none of galbench's bookkeeping (schedule, cost accounting, events)
    is done. With an augmentation `policy` each batch goes through galbench's augmentation, so that both
    loops do the same arithmetic; without, the comparison also charges galbench for augmenting.
    Returns a function that trains one epoch.
    """
    from galbench.data.tensors import Normalizer, augment
    from galbench.experiment.train import autocast_context, make_optimizer, resolve_precision
    from galbench.models.registry import build_model

    device = split.device
    precision = resolve_precision(cfg.precision, device)
    if split.resident is None or precision == "fp16":
        raise ValueError("the bare loop needs a device-resident split and fp32 or bf16 (it has no grad scaler)")
    torch.manual_seed(0)
    model = build_model(model_name, num_classes).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if cfg.compile else model
    optimizer = make_optimizer(model, cfg)
    normalizer = Normalizer().to(device)
    generator = torch.Generator(device=device).manual_seed(1)
    images, labels = split.resident, split.labels

    def epoch() -> None:
        order = torch.randperm(len(labels), device=device)
        for start in range(0, len(labels), cfg.batch_size):
            index = order[start:start + cfg.batch_size]
            batch = images[index]
            if policy is not None:
                batch = augment(batch, generator, policy.flips, policy.rot90, policy.shift)
            inputs = normalizer(batch)
            if cfg.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast_context(precision, device):
                loss = torch.nn.functional.cross_entropy(step_model(inputs).float(), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return epoch


def _training_figure(split, classes: list[str], size: int, batch: int, device: torch.device, compiled: bool,
                     timed_epochs: int) -> dict:
    """Images/s of galbench's loop and of bare loops over the same batches (with and without augmentation)."""
    from galbench.experiment.suite import AugmentSection, TrainSection
    from galbench.experiment.train import RunSpec, Trainer

    rows = len(split)
    cfg = TrainSection(optimizer="sgd", lr=0.01, batch_size=batch, epochs=100, device=str(device),
                       precision="bf16" if device.type == "cuda" else "fp32", channels_last=True, compile=compiled)
    policy = AugmentSection()
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(RunSpec("bench", 0, "alexnet", classes, cfg, policy, size, 1.0, []), split, split,
                          Path(work), None)
        trainer._eval_point = lambda step: None
        trainer.begin_session()
        trainer.train_one_epoch()  # warm-up (and compilation, where torch.compile is on)
        start = trainer.watch.now()
        for _ in range(timed_epochs):
            trainer.train_one_epoch()
        galbench_seconds = (trainer.watch.now() - start) / timed_epochs

    loops = {True: bare_loop(split, "alexnet", len(classes), cfg, policy),
             False: bare_loop(split, "alexnet", len(classes), cfg, None)}
    seconds = {}
    for augmented, bare_epoch in loops.items():
        bare_epoch()
        start = time.perf_counter()
        for _ in range(timed_epochs):
            bare_epoch()
        seconds[augmented] = (time.perf_counter() - start) / timed_epochs
    return {"galbench_images_per_second": rows / galbench_seconds,
            "bare_images_per_second": rows / seconds[True], "ratio_to_bare": seconds[True] / galbench_seconds,
            "bare_unaugmented_images_per_second": rows / seconds[False],
            "ratio_to_unaugmented_bare": seconds[False] / galbench_seconds}


def _bench_suite(quick: bool):
    """A 10-seed, 2-arm suite on a 4,000-galaxy simulated catalog at 224 px (scaled down if quick)."""
    from galbench.experiment.suite import Suite

    n, size, seeds, epochs = (120, 64, 2, 1) if quick else (4000, 224, 10, 10)
    raw = {"suite": {"name": "gpu-bench", "seeds": seeds, "thresholds": [0.7, 0.8, 0.9]},
           "data": {"synth": {"n": n, "size": size, "seed": 0}, "image_size": size},
           "train": {"optimizer": "sgd", "lr": 0.01, "batch_size": 32 if quick else 256, "epochs": epochs,
                     "evals_per_epoch": 2, "channels_last": True},
           "variant": [{"name": "scratch", "model": "alexnet", "init": "scratch"},
                       {"name": "scratch-lowlr", "model": "alexnet", "init": "scratch", "train": {"lr": 0.003}}]}
    return Suite.model_validate(raw)


def _suite_wall_time(suite, device: torch.device) -> dict:
    """Wall time of a suite from its (already simulated and cached) catalog to its exported winners."""
    from galbench.experiment.runner import run_suite

    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        run_suite(suite, Path(work), out=Path(work) / "run", device_override=str(device))
        seconds = time.perf_counter() - start
    synth = suite.data.synth
    return {"galaxies": synth.n, "image_size": synth.size, "seeds": len(suite.suite.seeds), "arms": len(suite.variant),
            "epochs": suite.train.epochs, "wall_seconds": seconds}


def tta(run_dir: Path, out: Path, repeats: int = 3) -> dict:
    """What rotation averaging (1, 4, 8 views) and int8 buy and cost on a run's test split, with its winner.

    Each model is exported calibrated on the run's validation split (two also with raw softmax); accuracy, balanced accuracy, ECE
    (15 bins) and NLL are measured on the test split, and galaxies per second of ONNX Runtime on the CPU
    as classify runs it (the best of `repeats` passes over the test images, batch 256, all models timed in the
    same process).
    """
    from galbench.data.tensors import prepare_images
    from galbench.inference import exportdata
    from galbench.inference.calibrate import reliability
    from galbench.inference.classify import OnnxRuntimeBackend, in_order
    from galbench.inference.export import export_onnx
    from galbench.models.weights import load_checkpoint

    run_dir = Path(run_dir)
    chosen = json.loads((run_dir / "export" / "exports.json").read_text())["winner"]
    checkpoint_path = run_dir / "runs" / chosen.get("run", f"{chosen['variant']}__seed{chosen['seed']}") / "best.pt"
    checkpoint = load_checkpoint(checkpoint_path)
    data = exportdata.from_run(run_dir, checkpoint, 64, training_images=True)
    catalog, labels, split = exportdata.run_catalog(run_dir)
    test = np.asarray(exportdata.seed_split(split, chosen["seed"], run_dir)["test"])
    images = prepare_images(np.asarray(catalog.images[test]), checkpoint.get("crop", 1.0),
                            checkpoint["image_size"]).numpy()
    truth = labels[test]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, views, int8, calibrate in (
                ("fp32, 1 view, raw softmax", 1, False, False), ("fp32, 1 view", 1, False, True),
                ("fp32, 4 turns", 4, False, True), ("fp32, 8 views (D4), raw softmax", 8, False, False),
                ("fp32, 8 views (D4)", 8, False, True), ("int8, 1 view", 1, True, True),
                ("int8, 8 views (D4)", 8, True, True)):
            path = Path(work) / f"{views}-{int8}-{calibrate}.onnx"
            try:
                meta = export_onnx(checkpoint_path, path, data.sample, val_images=data.val_images,
                                   val_labels=data.val_labels, calibrate=calibrate, tta=views, int8=int8,
                                   int8_images=data.train_images)
            except GalbenchError as refused:  # the int8 gate can refuse a model: that is a finding too
                if not int8:
                    raise
                rows.append({"model": name, "views": views, "precision": "int8", "refused": str(refused)})
                print(f"model {name} | refused: {refused}", flush=True)
                continue
            # classify's own CPU backend: its session options, and a batch per core at once for int8
            backend = OnnxRuntimeBackend(path, 256, images.shape[-1], ["probabilities"], meta["precision"],
                                         available=["CPUExecutionProvider"])

            def forward(backend=backend):
                return np.concatenate([outputs["probabilities"] for _, outputs in in_order(
                    lambda first: backend(images[first:first + 256]), range(0, len(images), 256),
                    backend.lanes)])

            probabilities = forward()
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                forward()
                seconds.append(time.perf_counter() - start)
            predicted = probabilities.argmax(1)
            recalls = [float((predicted[truth == k] == k).mean()) for k in np.unique(truth)]
            rows.append({"model": name, "views": views, "precision": "int8" if int8 else "fp32",
                         "temperature": float(meta["temperature"]),
                         "accuracy": float((predicted == truth).mean()), "balanced_accuracy": float(np.mean(recalls)),
                         "ece": reliability(probabilities, truth).ece,
                         "nll": float(-np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, 1)).mean()),
                         "galaxies_per_second": len(images) / min(seconds)})
            print(" | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()),
                  flush=True)
    result = {"device": cpu_name(), "torch_threads": torch.get_num_threads(), "run": str(run_dir),
              "checkpoint": str(checkpoint_path), "test_galaxies": int(len(test)), "models": rows}
    write_json_atomic(out / f"tta-{machine_name()}.json", result)
    return result


def main(argv=None) -> int:
    """Command line: `scaling`, `gpu` or `tta`."""
    parser = argparse.ArgumentParser(prog="python -m galbench.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["scaling", "gpu", "tta"])
    parser.add_argument("run_dir", nargs="?", type=Path, help="tta only: the run directory whose winner is measured")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code path, not a figure")
    parser.add_argument("--phases", default=",".join(GPU_PHASES),
                        help="gpu only: which figures, in order (default: %(default)s); split them over two "
                             "runs where one run has too little time")
    args = parser.parse_args(argv)
    phases = tuple(args.phases.split(","))
    if unknown := set(phases) - set(GPU_PHASES):
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}: choose from {', '.join(GPU_PHASES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.which == "tta":
        if args.run_dir is None:
            parser.error("tta needs RUN_DIR")
        tta(args.run_dir, args.out)
    elif args.which == "scaling":
        sizes = ((200, 400), (100, 200)) if args.quick else ((1000, 10000, 100000), (1000, 3000, 10000))
        scaling(args.out, *sizes)
    else:
        gpu(args.out, quick=args.quick, phases=phases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
