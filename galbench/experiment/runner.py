"""`galbench run`: a suite file in, a run directory out (resolved suite, event logs, checkpoints, results).

suite TOML -> validated Suite -> data (catalog or cached synth) -> split (one, or one per seed) -> nested
training subsets (`train_sizes`) -> runs (variant x size x seed) -> per-run event logs -> results.json /
results.csv. Every stage reads the previous stage's files, so `galbench report RUN_DIR` can redo the
tables without retraining.

Runs execute seed by seed: every arm at the first seed (and, inside a seed, size by size from the
smallest), then the next seed, with the order of the arms rotated by one at each seed. Drift in the
machine's load or clock over a suite then falls on all arms alike instead of lining up with one of them.
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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from galbench import __version__
from galbench.data.catalog import Catalog, read_catalog
from galbench.data.tensors import SplitImages, map_classes, stratified_split, train_subset
from galbench.experiment.pretrain import pretraining_path
from galbench.experiment.suite import Suite
from galbench.experiment.train import RunSpec, resolve_device, resolve_precision
from galbench.fileio import (
    cache_dir,
    exclusive_lock,
    make_dirs,
    remove_empty,
    write_json_atomic,
    write_text_atomic,
)
from galbench.models.weights import load_checkpoint

SUBSET_STREAM = 7_919  # the training subsets' own random stream beside the split's
LOCK_FILE = ".galbench.lock"  # in the run directory while a command writes there
# the packages whose versions can change results or speed; those not installed are left out
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "astropy", "galsim", "pillow", "onnx", "onnxruntime",
            "onnxruntime-gpu", "onnxconverter-common", "timm", "lightly", "pydantic", "ray", "nvidia-ml-py")


@dataclass
class PreparedData:
    """One split of a suite's data (train, validation, test) on the training device."""

    classes: list[str]
    train: SplitImages
    val: SplitImages
    test: SplitImages
    catalog: Catalog


@dataclass
class SplitPlan:
    """The rows of one split and, by size label, the positions (within its training rows) of each subset."""

    seed: int | list[int]  # what the split was drawn with
    rows: dict[str, np.ndarray]
    subsets: dict[str, np.ndarray]


def plan_splits(suite: Suite, labels: np.ndarray) -> dict[int | None, SplitPlan]:
    """Every split a suite needs, by key: None for the one shared split, else each run seed.

    The shared split is drawn with `data.split.seed`, a per-seed split with [split seed, run seed]; the
    training subsets of a split with that seed list plus SUBSET_STREAM, so every arm at a given seed and
    size trains on the same galaxies and smaller subsets lie inside larger ones.
    """
    cfg = suite.data.split
    plans = {}
    for key, seed in suite.split_seeds().items():
        rows = stratified_split(labels, (cfg.train, cfg.val, cfg.test), seed)
        train_labels = labels[rows["train"]]
        subset_seed = [*np.atleast_1d(seed).tolist(), SUBSET_STREAM]
        subsets = {suite.suite.size_label(size): train_subset(train_labels, size, suite.suite.per_class, subset_seed)
                   for size in suite.train_size_list() if size is not None}
        plans[key] = SplitPlan(seed, rows, subsets)
    return plans


class SuiteData:
    """A suite's catalog, classes and split plans; a split's images are prepared on the device when first asked.

    Only the most recently used split is kept on the device: runs execute seed by seed, so per-seed
    splits are prepared once each without all of them filling the device together.
    """

    def __init__(self, suite: Suite, path: Path, device: torch.device):
        self.suite, self.device = suite, device
        self.catalog = read_catalog(path)
        self.classes, self.labels = map_classes(self.catalog, suite.data.classes, suite.data.ttype_bins)
        self.plans = plan_splits(suite, self.labels)
        self._prepared: tuple[int | None, PreparedData] | None = None

    def split_key(self, seed: int) -> int | None:
        """Which split a run seed uses."""
        return seed if self.suite.data.split.per_seed else None

    def prepared(self, key: int | None) -> PreparedData:
        """The split `key`'s images on the device."""
        if self._prepared is None or self._prepared[0] != key:
            self._prepared = None  # release the previous split before preparing the next
            budget = self.suite.data.memory_budget_mb * 2**20
            splits = {name: SplitImages.build(self.catalog.images, index, self.labels, self.suite.data.crop,
                                              self.suite.data.image_size, self.device, budget)
                      for name, index in self.plans[key].rows.items()}
            self._prepared = key, PreparedData(self.classes, splits["train"], splits["val"], splits["test"],
                                               self.catalog)
        return self._prepared[1]

    def subset_positions(self, key: int | None, size_label: str | None) -> np.ndarray | None:
        """Positions within split `key`'s training set of the subset `size_label` (None: all of it)."""
        return None if size_label is None else self.plans[key].subsets[size_label]

    def for_run(self, key: int | None, size_label: str | None) -> tuple[SplitImages, SplitImages, SplitImages]:
        """The train (subset), validation and test splits of one run."""
        data = self.prepared(key)
        positions = self.subset_positions(key, size_label)
        return data.train if positions is None else data.train.subset(positions), data.val, data.test

    def record(self) -> dict:
        """What split.json holds: the classes and, per split, its seed, rows and training subsets."""
        def one(plan: SplitPlan) -> dict:
            train = plan.rows["train"]
            return {"seed": plan.seed, **{name: rows.tolist() for name, rows in plan.rows.items()},
                    "train_sizes": {label: {"count": int(positions.size), "rows": train[positions].tolist()}
                                    for label, positions in plan.subsets.items()}}

        record = {"classes": self.classes, "per_seed": self.suite.data.split.per_seed,
                  "per_class": self.suite.suite.per_class}
        if self.suite.data.split.per_seed:
            return {**record, "seeds": {str(key): one(plan) for key, plan in self.plans.items()}}
        return {**record, **one(self.plans[None])}

    def sample_images(self, count: int) -> np.ndarray:
        """The first validation images of the first split (what exported models are parity-checked on)."""
        return self.catalog.images[next(iter(self.plans.values())).rows["val"][:count]]


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


def run_order(variants: list[str], sizes: list, seeds: list[int]) -> list[tuple[str, object, int]]:
    """(variant, size, seed) in execution order: seed-major, sizes ascending inside a seed, arms rotated per seed."""
    order = []
    for position, seed in enumerate(seeds):
        shift = position % len(variants)
        arms = variants[shift:] + variants[:shift]
        order += [(variant, size, seed) for size in sizes for variant in arms]
    return order


def run_name(variant: str, size_label: str | None, seed: int) -> str:
    """The run directory's name: `<variant>__seed<k>`, or `<variant>__n<size>__seed<k>` with train sizes."""
    return f"{variant}__seed{seed}" if size_label is None else f"{variant}__n{size_label}__seed{seed}"


def plan_jobs(suite: Suite, base: Path, out: Path, classes: list[str], device_override: str | None,
              split_key) -> list:
    """Every run of the suite as a job, in execution order (see `run_order`)."""
    from galbench.experiment.executors import RunJob

    variants = {v.name: v for v in suite.variant}
    seed_position = {seed: k for k, seed in enumerate(suite.suite.seeds)}
    pretrainings: dict[tuple[str, int], Path | None] = {}
    jobs = []
    for name, size, seed in run_order(list(variants), suite.train_size_list(), suite.suite.seeds):
        variant = variants[name]
        train_cfg = suite.train_for(variant)
        if device_override:
            train_cfg = train_cfg.model_copy(update={"device": device_override})
        replicate = seed_position[seed] % suite.replicates_for(variant)  # round-robin over the seeds
        if (name, replicate) not in pretrainings:  # once each: a self-supervised one reads the catalog to know
            pretrainings[(name, replicate)] = pretraining_path(variant, suite, base, replicate)
        pretrain = pretrainings[(name, replicate)]
        label = suite.suite.size_label(size)
        meta = {"suite": suite.suite.name, "run": run_name(name, label, seed), "train_size_label": label,
                "replicate": replicate if pretrain else None, "pretrain_id": pretrain.stem if pretrain else None}
        spec = RunSpec(variant=name, seed=seed, model=variant.model, classes=classes, train=train_cfg,
                       augment=suite.data.augment, image_size=suite.data.image_size, crop=suite.data.crop,
                       thresholds=suite.suite.thresholds, finetune=variant.finetune, init=variant.init, meta=meta,
                       threshold_metric=suite.suite.threshold_metric)
        jobs.append(RunJob(spec, out / "runs" / meta["run"], (name, replicate), split_key(seed), label))
    return jobs


def run_suite(suite: Suite, base: Path, out: Path | None = None, device_override: str | None = None,
              display=None, executor=None) -> tuple[Path, list[dict]]:
    """Train every (variant, size, seed) run of a suite, skipping finished runs; returns the run dir and results.

    Results are listed in the suite's order (variant, then size, then seed), whatever order the runs executed in.
    """
    out = Path(out) if out else default_out_dir(suite)
    device = resolve_device(device_override or suite.train.device)
    with claimed_run_dir(out):
        return _run_suite(suite, base, out, device, device_override, display, executor)


def _run_suite(suite: Suite, base: Path, out: Path, device: torch.device, device_override: str | None, display,
               executor) -> tuple[Path, list[dict]]:
    from galbench.experiment.executors import make_executor

    progress_factory = display.bar if display else None
    path = suite.catalog_file(base, progress_factory)
    data = SuiteData(suite, path, device)
    precision = resolve_precision(suite.train.precision, device)
    write_json_atomic(out / "suite.resolved.json", {**suite.model_dump(), "catalog_path": str(path),
                                                    "baseline": suite.baseline,
                                                    "primary_endpoint": suite.primary_endpoint()})
    write_json_atomic(out / "environment.json", environment(device, precision))
    write_json_atomic(out / "split.json", data.record())
    if executor is None:
        cfg = suite.executor
        executor = make_executor(cfg.kind, cfg.address, cfg.cpus_per_run, cfg.gpus_per_run, cfg.max_retries)
    jobs = plan_jobs(suite, base, out, data.classes, device_override, data.split_key)
    # every init is resolved (files read, pretraining started) before the first run trains
    inits = executor.resolve_inits(suite, base, device, display)
    shared_by = Counter(job.spec.meta["pretrain_id"] for job in jobs)
    listed = [run_name(v.name, suite.suite.size_label(size), seed) for v in suite.variant
              for size in suite.train_size_list() for seed in suite.suite.seeds]
    results: dict[str, dict] = {}
    probes: dict[str, dict] = {}

    def on_result(job, result: dict) -> None:
        for key in ("run", "train_size_label", "replicate", "pretrain_id"):  # older event logs lack them
            if result.get(key) is None:
                result[key] = job.spec.meta[key]
        # the full cost of the pretraining this run started from, never divided among the runs sharing it
        result["pretrain_cost"] = _pretrain_cost(executor, inits[job.init_key])
        result["pretrain_shared_by"] = shared_by[result["pretrain_id"]] if result["pretrain_id"] else 0
        result["pretrain_meta"] = _pretrain_meta(result["pretrain_id"], probes)
        retries = job.run_dir / "retries.json"
        result["retries"] = json.loads(retries.read_text())["retries"] if retries.exists() else 0
        results[job.run_dir.name] = result
        write_results(out, [results[name] for name in listed if name in results])

    if display:
        display.start_runs(len(jobs))
    executor.run(jobs, inits, data, display, on_result)
    ordered = [results[name] for name in listed]
    export_winners(out, ordered, data)
    return out, ordered


def _pretrain_meta(pretrain_id: str | None, found: dict[str, dict]) -> dict | None:
    """What a pretraining learned along the way (its probe curve), read once per pretraining from its cache file.

    A pretraining made on a Ray worker may have no file on the driver: then nothing is reported.
    """
    if not pretrain_id:
        return None
    if pretrain_id not in found:
        path = cache_dir("pretrain") / f"{pretrain_id}.pt"
        meta = load_checkpoint(path)["meta"] if path.exists() else {}
        found[pretrain_id] = {key: meta[key] for key in PRETRAIN_META_KEYS if key in meta}
    return found[pretrain_id]


PRETRAIN_META_KEYS = ("probe_curve", "probe_majority_accuracy", "pretrain_val_accuracy", "pretrain_test_accuracy")


def _pretrain_cost(executor, init) -> dict:
    """The pretraining cost of an init (a value here, or a Ray object reference)."""
    value = init if isinstance(init, tuple) else executor.ray.get(init)
    return value[1]


def export_winners(out: Path, results: list[dict], data: SuiteData) -> dict[str, Path]:
    """Export each variant's best run and the overall winner to ONNX, both chosen on validation accuracy.

    Each model's temperature is fitted on its run's own validation split, so its probabilities are calibrated.

    The metadata quotes the chosen run's own best validation accuracy (optimistic: it is what chose the
    run) and its test accuracy (the honest figure). exports.json records both and the export's metadata.
    """
    from galbench.inference.export import export_onnx

    finished = [r for r in results if r["finished"]]
    if not finished:
        return {}
    sample = data.sample_images(256)
    best_by_variant = {}
    for result in finished:
        current = best_by_variant.get(result["variant"])
        if current is None or result["best_val_score"] > current["best_val_score"]:
            best_by_variant[result["variant"]] = result
    winner = max(best_by_variant.values(), key=lambda r: r["best_val_score"])
    exported, record = {}, {}
    for name, result in [*best_by_variant.items(), ("winner", winner)]:
        target = out / "export" / f"{name}.onnx"
        val_rows = data.plans[data.split_key(result["seed"])].rows["val"]  # the run's own validation split
        meta = export_onnx(out / "runs" / result["run"] / "best.pt", target, sample,
                           {"run": out.name, "run_name": result["run"],
                            "best_val_accuracy": result["best_val_accuracy"],
                            "test_accuracy": result["test_accuracy"]},
                           val_images=data.catalog.images[val_rows], val_labels=data.labels[val_rows],
                           catalog=data.catalog)
        exported[name] = target
        record[name] = {"variant": result["variant"], "seed": result["seed"], "run": result["run"],
                        "train_size_label": result.get("train_size_label"),
                        "best_val_accuracy": result["best_val_accuracy"], "test_accuracy": result["test_accuracy"],
                        "meta": meta}
    write_json_atomic(out / "export" / "exports.json", record)
    return exported


RESULT_COLUMNS = ("variant", "seed", "train_size_label", "train_size", "replicate", "pretrain_id", "model", "init",
                  "finished", "shared_gpu", "best_val_accuracy", "final_val_accuracy", "test_accuracy",
                  "test_balanced_accuracy")


def write_results(out: Path, results: list[dict]) -> None:
    """results.json (everything) and results.csv (a row per run and threshold), both atomic."""
    write_json_atomic(out / "results.json", {"runs": results})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    cost_fields = ("epochs", "samples", "train_flops", "eval_flops", "device_seconds", "eval_device_seconds",
                   "energy_joules", "wall_seconds")
    writer.writerow([*RESULT_COLUMNS, "threshold", "reached", *cost_fields])
    for result in results:
        for threshold, cost in result["thresholds"].items():
            writer.writerow([result.get(c) for c in RESULT_COLUMNS] + [threshold, cost["reached"]]
                            + [cost.get(f) for f in cost_fields])
    write_text_atomic(out / "results.csv", buffer.getvalue())
