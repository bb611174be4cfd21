"""`galbench run`: a suite file in, a run directory out (resolved suite, event logs, checkpoints, results).

suite TOML -> validated Suite -> data (catalog or cached synth) -> split -> runs (variant x seed) ->
per-run event logs -> results.json / results.csv. Every stage reads the previous stage's files, so
`galbench report RUN_DIR` can redo the tables without retraining.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from galbench import __version__
from galbench.data.catalog import Catalog, read_catalog
from galbench.data.synth import cached_synth_catalog
from galbench.data.tensors import SplitImages, map_classes, stratified_split
from galbench.errors import GalbenchError
from galbench.experiment.suite import Suite
from galbench.experiment.train import RunSpec, resolve_device, resolve_precision
from galbench.fileio import exclusive_lock, make_dirs, remove_empty, write_json_atomic, write_text_atomic

LOCK_FILE = ".galbench.lock"  # in the run directory while a command writes there
# the packages whose versions can change results or speed; those not installed are left out
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "astropy", "galsim", "pillow", "onnx", "onnxruntime",
            "onnxruntime-gpu", "onnxconverter-common", "timm", "lightly", "pydantic", "ray", "nvidia-ml-py")


@dataclass
class PreparedData:
    """A suite's data after class mapping and splitting, on the training device."""

    classes: list[str]
    train: SplitImages
    val: SplitImages
    test: SplitImages
    catalog: Catalog


def catalog_path(suite: Suite, base: Path, progress_factory=None) -> Path:
    """The suite's catalog file: its own path (relative to the suite file) or the cached synth file."""
    if suite.data.synth is not None:
        return cached_synth_catalog(suite.data.synth.model_dump(), progress_factory)
    path = Path(suite.data.catalog)
    path = path if path.is_absolute() else base / path
    if not path.exists():
        how = f"; create it with: {suite.data.create_with}" if suite.data.create_with else ""
        raise GalbenchError(f"catalog file not found{how}", where=str(path))
    return path


def prepare_data(suite: Suite, path: Path, device: torch.device) -> PreparedData:
    """Read the catalog, map its classes, split it and put the splits on the device."""
    catalog = read_catalog(path)
    classes, labels = map_classes(catalog, suite.data.classes, suite.data.ttype_bins)
    split_cfg = suite.data.split
    rows = stratified_split(labels, (split_cfg.train, split_cfg.val, split_cfg.test), split_cfg.seed)
    budget = suite.data.memory_budget_mb * 2**20
    splits = {name: SplitImages.build(catalog.images, index, labels, suite.data.crop, suite.data.image_size,
                                      device, budget) for name, index in rows.items()}
    return PreparedData(classes, splits["train"], splits["val"], splits["test"], catalog)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str]:
    """Exact versions of the installed packages that matter to results (see PACKAGES)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def code_version() -> dict:
    """Which galbench code ran: the git commit where galbench is a checkout (and whether its files differ
    from it), and always a SHA-256 over the package's own files, which also identifies an installed copy."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".toml") and p.is_file()):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    version = {"source_sha256": digest.hexdigest(), "git_commit": None, "git_dirty": None}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    # only a checkout of galbench itself counts, not some other repository that happens to contain it
    if top and Path(top).resolve() == package.parent:
        version["git_commit"] = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no", "--", str(package))
        version["git_dirty"] = bool(status) if status is not None else None
    return version


def environment(device: torch.device, precision: str) -> dict:
    """What the results were measured on, and with which code and packages (so runs can be compared)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"galbench": __version__, "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn,
            "python": platform.python_version(), "device": str(device), "device_name": name,
            "precision": precision, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "code": code_version(), "packages": package_versions()}


@contextlib.contextmanager
def claimed_run_dir(out: Path) -> Iterator[Path]:
    """The run directory, locked against a second command; a failure leaves no empty folders behind."""
    created = make_dirs(out)
    try:
        with exclusive_lock(out / LOCK_FILE, "run directory"):
            yield out
    except BaseException:
        for folder, _, _ in sorted(os.walk(out), key=lambda entry: -len(entry[0])):
            if folder != str(out):
                remove_empty([Path(folder)])
        remove_empty(created)
        raise


def default_out_dir(suite: Suite) -> Path:
    """reports/<suite>/<hash of the suite without its seeds>: the same suite resumes in the same folder."""
    return Path("reports") / suite.suite.name / suite.identity()


def run_suite(suite: Suite, base: Path, out: Path | None = None, device_override: str | None = None,
              display=None, executor=None) -> tuple[Path, list[dict]]:
    """Train every (variant, seed) run of a suite, skipping finished runs; returns the run dir and results."""
    out = Path(out) if out else default_out_dir(suite)
    device = resolve_device(device_override or suite.train.device)
    with claimed_run_dir(out):
        return _run_suite(suite, base, out, device, device_override, display, executor)


def _run_suite(suite: Suite, base: Path, out: Path, device: torch.device, device_override: str | None, display,
               executor) -> tuple[Path, list[dict]]:
    from galbench.experiment.executors import RunJob, make_executor

    progress_factory = display.bar if display else None
    path = catalog_path(suite, base, progress_factory)
    data = prepare_data(suite, path, device)
    precision = resolve_precision(suite.train.precision, device)
    write_json_atomic(out / "suite.resolved.json", {**suite.model_dump(), "catalog_path": str(path),
                                                    "baseline": suite.baseline})
    write_json_atomic(out / "environment.json", environment(device, precision))
    write_json_atomic(out / "split.json", {"classes": data.classes, "train": data.train.rows, "val": data.val.rows,
                                           "test": data.test.rows})
    if executor is None:
        cfg = suite.executor
        executor = make_executor(cfg.kind, cfg.address, cfg.cpus_per_run, cfg.gpus_per_run, cfg.max_retries)
    # every init is resolved (files read, pretraining started) before the first run trains
    inits = executor.resolve_inits(suite, base, device, display)
    # runs that share one pretraining (same init, model and fractal parameters) share its cost
    init_keys = {v.name: (v.init, v.model, v.fractal) for v in suite.variant}
    shared_by = {v.name: len(suite.suite.seeds) * list(init_keys.values()).count(init_keys[v.name])
                 for v in suite.variant}
    jobs = []
    for variant in suite.variant:
        train_cfg = suite.train_for(variant)
        if device_override:
            train_cfg = train_cfg.model_copy(update={"device": device_override})
        for seed in suite.suite.seeds:
            spec = RunSpec(variant=variant.name, seed=seed, model=variant.model, classes=data.classes,
                           train=train_cfg, augment=suite.data.augment, image_size=suite.data.image_size,
                           crop=suite.data.crop, thresholds=suite.suite.thresholds, finetune=variant.finetune,
                           init=variant.init, meta={"suite": suite.suite.name})
            jobs.append(RunJob(spec, out / "runs" / f"{variant.name}__seed{seed}", variant.name))
    results: dict[str, dict] = {}

    def on_result(job: RunJob, result: dict) -> None:
        result["pretrain_cost"] = _pretrain_cost(executor, inits[job.init_key])
        result["pretrain_shared_by"] = shared_by[job.spec.variant] if result["pretrain_cost"] else 0
        retries = job.run_dir / "retries.json"
        result["retries"] = json.loads(retries.read_text())["retries"] if retries.exists() else 0
        results[job.run_dir.name] = result
        write_results(out, [results[j.run_dir.name] for j in jobs if j.run_dir.name in results])

    if display:
        display.start_runs(len(jobs))
    executor.run(jobs, inits, data, display, on_result)
    ordered = [results[job.run_dir.name] for job in jobs]
    export_winners(out, ordered, data)
    return out, ordered


def _pretrain_cost(executor, init) -> dict:
    """The pretraining cost of an init (a value here, or a Ray object reference)."""
    value = init if isinstance(init, tuple) else executor.ray.get(init)
    return value[1]


def export_winners(out: Path, results: list[dict], data: PreparedData) -> dict[str, Path]:
    """Export each variant's best run (best validation accuracy) and the overall winner to ONNX."""
    from galbench.inference.export import export_onnx

    finished = [r for r in results if r["finished"]]
    if not finished:
        return {}
    sample = data.catalog.images[data.val.rows[:256]]
    exported = {}
    best_by_variant = {}
    for result in finished:
        current = best_by_variant.get(result["variant"])
        if current is None or result["best_val_accuracy"] > current["best_val_accuracy"]:
            best_by_variant[result["variant"]] = result
    winner = max(best_by_variant.values(), key=lambda r: r["best_val_accuracy"])
    for name, result in [*best_by_variant.items(), ("winner", winner)]:
        checkpoint = out / "runs" / f"{result['variant']}__seed{result['seed']}" / "best.pt"
        target = out / "export" / f"{name}.onnx"
        export_onnx(checkpoint, target, sample, {"run": out.name, "best_val_accuracy": result["best_val_accuracy"]})
        exported[name] = target
    write_json_atomic(out / "export" / "exports.json",
                      {name: {"variant": r["variant"], "seed": r["seed"], "best_val_accuracy": r["best_val_accuracy"]}
                       for name, r in [*best_by_variant.items(), ("winner", winner)]})
    return exported


RESULT_COLUMNS = ("variant", "seed", "model", "init", "finished", "best_val_accuracy", "final_val_accuracy",
                  "test_accuracy")


def write_results(out: Path, results: list[dict]) -> None:
    """results.json (everything) and results.csv (a row per run and threshold), both atomic."""
    write_json_atomic(out / "results.json", {"runs": results})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    cost_fields = ("epochs", "samples", "train_flops", "device_seconds", "energy_joules", "wall_seconds")
    writer.writerow([*RESULT_COLUMNS, "threshold", "reached", *cost_fields])
    for result in results:
        for threshold, cost in result["thresholds"].items():
            writer.writerow([result[c] for c in RESULT_COLUMNS] + [threshold, cost["reached"]]
                            + [cost.get(f) for f in cost_fields])
    write_text_atomic(out / "results.csv", buffer.getvalue())
