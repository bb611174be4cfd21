"""What checkpoints cost a run: bytes written, and the share of run time they take.

    python tools/bench_checkpoints.py [--model alexnet --size 224 --steps 4 --epochs 5 --repeats 3]

Runs galbench's own `train.run` on generated images (SGD with momentum, as the paper trained AlexNet, so
`last.pt` holds weights and momentum) in three ways, interleaved round after round so that drifts of a
shared machine hit all alike:

- `with checkpoints`: as galbench runs, every checkpoint really written (bytes counted);
- `without`: every checkpoint write replaced by keeping the object in memory (and, where galbench copies
  state for a background write, no copy either), so what is left is training and evaluation alone;
- `every N`: with `train.checkpoint_every` (only where this galbench has it).

Two figures of the checkpoint share of run time: (median wall with - median wall without) / median wall with,
which includes what a background write takes from training (cores, memory bandwidth) but is as noisy as the
machine; and the seconds the training thread itself spends on checkpoints (writing them where that is
synchronous, copying state and waiting for the previous write where it is not) over the run's wall time,
which shifts less with load. The script uses whatever galbench is importable, so the same script measures an
older version (`git archive` it into a folder and put that first on PYTHONPATH). It writes a JSON file with
every wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


def _code_version(package: Path) -> str:
    """Which galbench ran, without machine paths: the git commit of its checkout, or its folder's name."""
    import subprocess

    found = subprocess.run(["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    inside = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel"], capture_output=True,
                            text=True).stdout.strip()
    if found.returncode == 0 and inside and Path(inside) in package.parents:
        return f"git {found.stdout.strip()}"
    return f"unversioned copy in a folder named {package.parent.name!r}"

@contextmanager
def _checkpoints(mode: str, counter: dict):
    """Patch galbench's checkpoint writing for one run: count bytes, or skip writing altogether."""
    from galbench.experiment import train

    real_save, real_load = torch.save, train.load_checkpoint
    real_copy = getattr(train, "cpu_copy", None)
    kept: dict[str, dict] = {}

    def counting_save(obj, f, *args, **kwargs):  # f: a path, or an open file (galbench's versions differ)
        real_save(obj, f, *args, **kwargs)
        if hasattr(f, "flush"):
            f.flush()
        counter["bytes"] += os.fstat(f.fileno()).st_size if hasattr(f, "fileno") else os.path.getsize(f)
        counter["files"] += 1

    def keeping_save(obj, f, *args, **kwargs):
        tmp = Path(f if isinstance(f, str | os.PathLike) else f.name)  # atomic_path's .NAME.RANDOM.tmp
        kept[str(tmp.parent / tmp.name[1:].rsplit(".", 2)[0])] = obj

    def timed(function):
        """Count the training thread's seconds in `function` (outermost calls only)."""

        def wrapper(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread() or counter["depth"]:
                return function(*args, **kwargs)
            counter["depth"] += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                counter["blocked_seconds"] += time.perf_counter() - start
                counter["depth"] -= 1

        return wrapper

    # everything a checkpoint makes the training thread do, in the version of galbench that is running
    targets = [(train, "save_checkpoint"), (train.Trainer, "save_last")]
    optional = ((train, "cpu_copy"), (getattr(train, "CheckpointWriter", None), "wait"))
    targets += [(owner, name) for owner, name in optional if owner is not None and hasattr(owner, name)]
    originals = [(owner, name, getattr(owner, name)) for owner, name in targets]
    counter.update(blocked_seconds=0.0, depth=0)
    torch.save = keeping_save if mode == "without" else counting_save
    if mode == "without":
        train.load_checkpoint = lambda path: kept[str(path)]
        if real_copy is not None:
            train.cpu_copy = lambda value: value
    else:
        for owner, name, original in originals:
            setattr(owner, name, timed(original))
    try:
        yield
    finally:
        torch.save, train.load_checkpoint = real_save, real_load
        for owner, name, original in originals:
            setattr(owner, name, original)
        counter.pop("depth")


def _splits(size: int, train_rows: int, val_rows: int, classes: int):
    from galbench.data.tensors import SplitImages

    rng = np.random.default_rng(0)
    rows = train_rows + 2 * val_rows
    labels = rng.integers(0, classes, rows)
    # brightness follows the class a little, so validation accuracy climbs over the evaluations and best.pt
    # is rewritten as in real runs
    images = (rng.integers(0, 200, (rows, 3, size, size)) + 12 * labels[:, None, None, None]).astype(np.uint8)
    index = np.arange(rows)
    parts = (index[:train_rows], index[train_rows:train_rows + val_rows], index[train_rows + val_rows:])
    return [SplitImages.build(images, part, labels, 1.0, size, torch.device("cpu"), 2**34) for part in parts]


def one_run(mode: str, args, splits, every: int | None = None) -> dict:
    """Wall seconds and checkpoint bytes of one galbench run."""
    from galbench.experiment.suite import AugmentSection, TrainSection
    from galbench.experiment.train import RunSpec
    from galbench.experiment.train import run as train_run

    keys = {"checkpoint_every": every} if every else {}
    cfg = TrainSection(optimizer="sgd", lr=args.lr, momentum=0.9, batch_size=args.batch, epochs=args.epochs,
                       evals_per_epoch=args.evals_per_epoch, device="cpu", precision="fp32", **keys)
    spec = RunSpec(variant="bench", seed=0, model=args.model, classes=[f"c{k}" for k in range(args.classes)],
                   train=cfg, augment=AugmentSection(), image_size=args.size, crop=1.0, thresholds=[])
    counter = {"bytes": 0, "files": 0}
    with tempfile.TemporaryDirectory(dir=args.workdir) as work, _checkpoints(mode, counter):
        start = time.perf_counter()
        train_run(spec, *splits, Path(work) / "run")
        wall = time.perf_counter() - start
    return {"wall_seconds": wall, **counter, "blocked_share": counter["blocked_seconds"] / wall}


def main(argv=None) -> int:
    """Measure and write the JSON figures."""
    import galbench
    from galbench.experiment.runner import cpu_name
    from galbench.experiment.suite import TrainSection

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--evals-per-epoch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01, as the paper's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, default=2, help="also measure train.checkpoint_every = EVERY epochs")
    parser.add_argument("--workdir", default=None, help="where checkpoints are written (default: the temp dir)")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/checkpoints.json"))
    args = parser.parse_args(argv)
    splits = _splits(args.size, args.steps * args.batch, args.batch, args.classes)
    modes = ["with", "without"]
    if "checkpoint_every" in TrainSection.model_fields:
        modes.append("every")
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    blocked: dict[str, list[float]] = {mode: [] for mode in modes}
    written: dict[str, dict] = {}
    one_run("without", args, splits)  # warm-up: first-touch allocations, FLOP counting's tracing
    for repeat in range(args.repeats):
        for mode in modes:
            every = args.every if mode == "every" else None
            figures = one_run("with" if mode == "every" else mode, args, splits, every)
            walls[mode].append(figures["wall_seconds"])
            blocked[mode].append(figures["blocked_share"])
            written[mode] = {"bytes": figures["bytes"], "files": figures["files"]}
            print(f"round {repeat + 1}: {mode:>7}: {figures['wall_seconds']:7.2f} s, "
                  f"{figures['bytes'] / 2**20:8.1f} MiB in {figures['files']} files, training thread "
                  f"{figures['blocked_seconds']:.2f} s on checkpoints", flush=True)
    median = {mode: statistics.median(values) for mode, values in walls.items()}
    result = {
        "galbench": galbench.__version__, "galbench_code": _code_version(Path(galbench.__file__).parent),
        "machine": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "platform": platform.platform(), "load_average": os.getloadavg(),
        "settings": {key: value for key, value in vars(args).items() if key not in ("out",)},
        "wall_seconds": walls, "median_wall_seconds": median,
        "bytes_written_per_run": {mode: written[mode]["bytes"] for mode in modes if mode != "without"},
        "checkpoint_share_of_run_time": {mode: (median[mode] - median["without"]) / median[mode]
                                         for mode in modes if mode != "without"},
        "training_thread_share_on_checkpoints": {mode: statistics.median(blocked[mode])
                                                 for mode in modes if mode != "without"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    for mode, share in result["checkpoint_share_of_run_time"].items():
        print(f"{mode}: {result['bytes_written_per_run'][mode] / 2**20:,.0f} MiB written per run, checkpoints "
              f"{100 * share:.1f}% of run time (median {median[mode]:.2f} s against {median['without']:.2f} s), "
              f"training thread {100 * result['training_thread_share_on_checkpoints'][mode]:.1f}% on them")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
