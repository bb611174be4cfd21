"""Where the runs of a suite execute: here, one after another (the default), or as tasks on a Ray cluster.

Both write the same run directory. With Ray, every (variant, size, seed) run is a task with its resource
request; each pretraining a suite needs (each replicate) is one task that the runs needing it wait for,
holding whole GPUs so that its energy is its own; a run given a fraction of a GPU is flagged `shared_gpu`
and bills no energy. The driver ships each split once through Ray's object store and the run's files (event log, checkpoints) stream back to the driver after
every epoch, so no shared filesystem is needed. A run whose worker dies is submitted again from the last
checkpoint the driver holds, up to `max_retries` times, and its retries are recorded in `retries.json`.
The local executor imports nothing from Ray.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from galbench.cluster import connect_ray
from galbench.errors import GalbenchError
from galbench.experiment.train import EventLog, RunSpec, planned_epochs, results_from_events
from galbench.experiment.train import run as train_run
from galbench.fileio import atomic_path, write_json_atomic

RUN_FILES = ("events.jsonl", "last.pt", "best.pt", "final.pt")


@dataclass
class RunJob:
    """One (variant, size, seed) run: what to train, on which split and subset, and where its files live."""

    spec: RunSpec
    run_dir: Path
    init_key: tuple[str, int]  # (variant, replicate): which resolved init (pretraining) it starts from
    split_key: int | None = None  # which split of the suite's data (None: the one shared split)
    size_label: str | None = None  # which training subset (None: the whole training split)


def _inits_needed(suite) -> list[tuple]:
    """(variant, replicate) for every init a suite's runs start from."""
    return [(variant, replicate) for variant in suite.variant for replicate in range(suite.replicates_for(variant))]


def _finished(job: RunJob) -> dict | None:
    """The results of a job whose event log says it finished, else None."""
    events = EventLog(job.run_dir / "events.jsonl").read()
    return results_from_events(events, job.spec.thresholds) if any(e["event"] == "run_stop" for e in events) else None


def _display_name(job: RunJob) -> str:
    return job.spec.variant if job.size_label is None else f"{job.spec.variant} n={job.size_label}"


def _attach_init(spec: RunSpec, init: tuple) -> None:
    """Give a run its starting weights, and log the full cost of the pretraining that made them."""
    spec.init_state, spec.meta["pretrain_cost"] = init


class LocalExecutor:
    """Runs one after another in this process."""

    name = "local"

    def resolve_inits(self, suite, base: Path, device: torch.device, display=None) -> dict:
        """{(variant name, replicate): (state dict or None, pretraining cost)}, pretraining on demand here."""
        from galbench.experiment.inits import resolve_init

        return {(v.name, r): resolve_init(v, suite, base, device, display, r) for v, r in _inits_needed(suite)}

    def run(self, jobs: list[RunJob], inits: dict, data, display=None,
            on_result: Callable[[RunJob, dict], None] | None = None) -> list[dict]:
        """Train every job in order (finished ones are read back, not redone)."""
        results = []
        for job in jobs:
            result = _finished(job)
            fresh = result is None
            if fresh:
                _attach_init(job.spec, inits[job.init_key])
                train, val, test = data.for_run(job.split_key, job.size_label)
                if display:
                    display.start_run(_display_name(job), job.spec.seed, planned_epochs(job.spec.train, len(train)))
                result = train_run(job.spec, train, val, test, job.run_dir,
                                   on_event=display.on_event if display else None)
                job.spec.init_state = None  # the weights are in the run's own checkpoints now
            results.append(result)
            if on_result:
                on_result(job, result)
            if display and fresh:
                display.end_run(result)
            elif display:
                display.finished_earlier(_display_name(job), job.spec.seed, result)
        return results


def _read_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in RUN_FILES if (folder / name).exists()}


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Mirror a worker's run files into the driver's run directory (atomically, file by file)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(content)
    if "final.pt" in files:
        (folder / "last.pt").unlink(missing_ok=True)


def _split_payload(split) -> dict:
    """A split as plain arrays for the object store (prepared images, labels, catalog rows)."""
    return {"images": split.all_images().cpu().numpy(), "labels": split.labels.cpu().numpy(), "size": split.size,
            "rows": split.rows_in_catalog}


def _split_from_payload(payload: dict, device: torch.device):
    import numpy as np

    from galbench.data.tensors import SplitImages

    rows = np.arange(len(payload["labels"]))
    return SplitImages.build(payload["images"], rows, payload["labels"], 1.0, payload["size"], device, 2**62,
                             catalog_rows=payload["rows"])


def _remote_train(spec: RunSpec, init: tuple, data: dict, train_positions, files: dict[str, bytes], name: str,
                  queue, threads: int) -> dict:
    """Body of a Ray task: train one run in a scratch folder, streaming its files to the driver."""
    from galbench.experiment.train import resolve_device

    torch.set_num_threads(threads)
    queue.put(("pid", name, os.getpid()))
    device = resolve_device(spec.train.device)
    _attach_init(spec, init)
    splits = {key: _split_from_payload(data[key], device) for key in ("train", "val", "test")}
    if train_positions is not None:
        splits["train"] = splits["train"].subset(train_positions)
    with tempfile.TemporaryDirectory(prefix="galbench-ray-") as work:
        folder = Path(work)
        _write_files(folder, files)
        return train_run(spec, splits["train"], splits["val"], splits["test"], folder,
                         on_event=lambda event: queue.put(("event", name, event)),
                         on_checkpoint=lambda: queue.put(("files", name, _read_files(folder))))


def _remote_pretrain(variant, suite, base: str, device_spec: str, replicate: int) -> tuple:
    """Body of a Ray task: one pretraining, made (or found in the worker's cache) on a worker."""
    from galbench.experiment.inits import resolve_init
    from galbench.experiment.train import resolve_device

    return resolve_init(variant, suite, Path(base), resolve_device(device_spec), replicate=replicate)


class RayExecutor:
    """Runs as Ray tasks on a cluster (`address`: auto, ray://HOST:PORT, or None for a local Ray)."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_run: float = 1, gpus_per_run: float = 0,
                 max_retries: int = 2):
        self.ray = connect_ray(address)
        self.cpus_per_run, self.gpus_per_run, self.max_retries = cpus_per_run, gpus_per_run, max_retries

    def resolve_inits(self, suite, base: Path, device: torch.device, display=None) -> dict:
        """Files are read here; each pretraining becomes one task whose result the runs wait for."""
        from galbench.experiment.inits import resolve_init
        from galbench.experiment.pretrain import pretraining_path

        # a pretraining holds whole GPUs: its energy counter then measures its own work only
        remote = self.ray.remote(num_cpus=self.cpus_per_run, num_gpus=math.ceil(self.gpus_per_run))(_remote_pretrain)
        inits, pending = {}, {}
        for variant, replicate in _inits_needed(suite):
            path = pretraining_path(variant, suite, base, replicate)
            if path is None:
                inits[(variant.name, replicate)] = self.ray.put(resolve_init(variant, suite, base, device, display))
                continue
            if path not in pending:  # variants with the same pretraining share one task
                pending[path] = remote.remote(variant, suite, str(base), suite.train.device, replicate)
            inits[(variant.name, replicate)] = pending[path]
        return inits

    def run(self, jobs: list[RunJob], inits: dict, data, display=None,
            on_result: Callable[[RunJob, dict], None] | None = None) -> list[dict]:
        """Submit every unfinished job, mirror files as they stream in, retry runs whose worker died."""
        from ray.util.queue import Empty, Queue

        ray = self.ray
        queue = Queue()
        data_refs: dict = {}  # each split goes into the object store once
        threads = max(1, int(self.cpus_per_run))
        remote = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0)(_remote_train)
        by_name = {job.run_dir.name: job for job in jobs}
        results: dict[str, dict] = {}
        retries: dict[str, list[str]] = {}
        running: dict = {}

        def submit(job: RunJob):
            spec = job.spec
            spec.init_state = None  # the weights travel as their own object
            spec.shared_gpu = 0 < self.gpus_per_run < 1
            if job.split_key not in data_refs:
                prepared = data.prepared(job.split_key)
                data_refs[job.split_key] = ray.put({key: _split_payload(getattr(prepared, key))
                                                    for key in ("train", "val", "test")})
            files = _read_files(job.run_dir)
            ref = remote.remote(spec, inits[job.init_key], data_refs[job.split_key],
                                data.subset_positions(job.split_key, job.size_label), files, job.run_dir.name, queue,
                                threads)
            running[ref] = job

        for job in jobs:
            finished = _finished(job)
            if finished is not None:
                results[job.run_dir.name] = finished
                if on_result:
                    on_result(job, finished)
                if display:
                    display.finished_earlier(_display_name(job), job.spec.seed, finished)
            else:
                submit(job)

        def drain():
            while True:
                try:
                    kind, name, payload = queue.get_nowait()
                except Empty:
                    return
                if kind == "files":
                    _write_files(by_name[name].run_dir, payload)
                elif kind == "event" and display and payload["event"] == "eval":
                    display.remote_event(name, payload)

        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            drain()
            for ref in done:
                job = running.pop(ref)
                name = job.run_dir.name
                try:
                    result = ray.get(ref)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayTaskError,
                        ray.exceptions.NodeDiedError, ray.exceptions.ActorDiedError) as exc:
                    drain()
                    retries.setdefault(name, []).append(type(exc).__name__)
                    write_json_atomic(job.run_dir / "retries.json", {"retries": len(retries[name]),
                                                                     "reasons": retries[name]})
                    if len(retries[name]) > self.max_retries:
                        raise GalbenchError(f"run {name} failed {len(retries[name])} times; last: "
                                            f"{str(exc).splitlines()[0][:160]}") from None
                    submit(job)
                    continue
                drain()
                results[name] = result
                if on_result:
                    on_result(job, result)
                if display:
                    display.start_run(_display_name(job), job.spec.seed,
                                      planned_epochs(job.spec.train, result["train_size"]))
                    display.end_run(result)
        return [results[job.run_dir.name] for job in jobs]


def make_executor(kind: str, address: str | None = None, cpus_per_run: float = 1, gpus_per_run: float = 0,
                  max_retries: int = 2):
    """The executor named `kind` ("local" or "ray")."""
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(address, cpus_per_run, gpus_per_run, max_retries)
    raise GalbenchError(f"unknown executor {kind!r}", fix="local or ray")
