"""One training run (a variant and a seed): the loop, evaluation, the event log, checkpoints and resume.

The loop is plain to see: `train_one_epoch`, `evaluate`, `run`. A run's budget is `epochs` over its
training set or a number of optimizer `steps`; it evaluates `evals_per_epoch` times an epoch or `evals`
times in all. Each run writes an append-only JSON-lines event log (run_start, eval, threshold_reached,
run_stop) and checkpoints `last.pt` at the end of every epoch that evaluated (or every
`train.checkpoint_every` epochs or seconds); the last epoch's weights go to `final.pt`. A rerun skips a
finished run and resumes an interrupted one from `last.pt`, first cutting the log back to what that
checkpoint had seen, so at most the epochs since the last checkpoint are lost and, on the CPU, the resumed
run's results equal an uninterrupted run's.

Checkpoints cost almost no training time: at an epoch's end the state is copied to the CPU and written by
a background thread while the next epoch trains. The best validation state is kept in memory (on the
CPU) at the evaluation that found it and written as weights only, at most once per checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

from galbench.data.tensors import Normalizer, SplitImages, augment, balanced_class_weights, balanced_order
from galbench.errors import GalbenchError
from galbench.experiment.accounting import (
    Costs,
    EnergyMeter,
    Stopwatch,
    flops_per_sample,
    threshold_crossings,
)
from galbench.experiment.suite import AugmentSection, TrainSection
from galbench.fileio import atomic_path, user_os_error
from galbench.models.finetune import apply_finetune_policy, keep_frozen_norms_in_eval
from galbench.models.registry import build_model
from galbench.models.weights import CHECKPOINT_FORMAT, load_backbone, load_checkpoint


@dataclass
class RunSpec:
    """Everything one (variant, seed) run needs besides its data."""

    variant: str
    seed: int
    model: str
    classes: list[str]
    train: TrainSection
    augment: AugmentSection
    image_size: int
    crop: float
    thresholds: list[float]
    finetune: str = "all"
    init_state: dict[str, torch.Tensor] | None = None
    init: str = "scratch"
    meta: dict = field(default_factory=dict)  # logged in run_start and carried in checkpoints
    threshold_metric: str = "accuracy"  # the validation metric the thresholds are about: accuracy | balanced_accuracy
    shared_gpu: bool = False  # a fraction of a GPU (Ray): the card's energy counter is not this run's


def resolve_device(spec: str) -> torch.device:
    """`auto` is the first CUDA device where one exists, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GalbenchError(f"device {spec!r} asked for, but torch sees no CUDA GPU", where="train.device",
                            fix="use device = \"auto\" or \"cpu\"")
    return device


def resolve_precision(spec: str, device: torch.device) -> str:
    """`auto` is bf16 autocast on CUDA and fp32 on the CPU."""
    if spec == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return spec


def autocast_context(precision: str, device: torch.device):
    """The autocast context for a precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def lr_at(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainSection) -> float:
    """Learning rate at a global step: linear warm-up, then constant, cosine or step decay; or one cycle."""
    if cfg.schedule == "onecycle":
        return one_cycle_lr(step, total_steps, cfg.lr)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":  # divide by 10 at 1/2 and 3/4 of training
        return cfg.lr * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))
    return cfg.lr


def one_cycle_lr(step: int, total_steps: int, max_lr: float, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4) -> float:
    """torch.optim.lr_scheduler.OneCycleLR's learning rate (two phases, cosine) with its defaults.

    From max_lr / div_factor up to max_lr over the first pct_start of the steps, then down to
    max_lr / div_factor / final_div_factor. Momentum is not cycled.
    """
    initial = max_lr / div_factor
    peak_step = float(pct_start * total_steps) - 1  # torch's end of the first phase
    if step <= peak_step:
        pct, start_lr, end_lr = step / peak_step, initial, max_lr
    else:
        pct, start_lr, end_lr = (step - peak_step) / (total_steps - 1 - peak_step), max_lr, initial / final_div_factor
    return end_lr + (start_lr - end_lr) / 2.0 * (math.cos(math.pi * pct) + 1)


def total_steps(cfg: TrainSection, steps_per_epoch: int) -> int:
    """The run's optimizer steps: `steps`, or `epochs` passes over its training set."""
    budget = cfg.budget()
    return budget["steps"] if "steps" in budget else budget["epochs"] * steps_per_epoch


def eval_steps(cfg: TrainSection, steps_per_epoch: int) -> set[int]:
    """Global steps after which the run evaluates.

    With `evals_per_epoch`: that many times in each epoch, at evenly spaced steps of the epoch. With
    `evals`: that many times over the whole run, after steps round(T k / evals), k = 1..evals; the last
    is always the final step, and the count does not grow with the training set's size.
    """
    budget, total = cfg.budget(), total_steps(cfg, steps_per_epoch)
    if "evals_per_epoch" in budget:
        per = budget["evals_per_epoch"]
        within = {round(steps_per_epoch * (k + 1) / per) for k in range(per)}
        points = {epoch * steps_per_epoch + s for epoch in range(budget["epochs"]) for s in within}
    else:
        points = {round(total * (k + 1) / budget["evals"]) for k in range(budget["evals"])}
    return {step for step in points if 0 < step <= total}


def make_optimizer(model: nn.Module, cfg: TrainSection) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class EventLog:
    """Append-only JSON lines, flushed per event so a killed process loses nothing already logged."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, event: dict) -> None:
        """Append one event, stamped with the wall-clock time; a failed write (a full disk) leaves no half line."""
        line = json.dumps({"time_unix": round(time.time(), 3), **event}) + "\n"
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "a") as handle:
                handle.write(line)
                handle.flush()
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)
            raise user_os_error(exc, self.path) or exc from None

    def read(self) -> list[dict]:
        """Every complete event (a half-written last line from a kill is ignored)."""
        if not self.path.exists():
            return []
        events = []
        for line in self.path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return events

    def truncate(self, count: int) -> None:
        """Keep the first `count` events (atomically), dropping what a lost epoch logged."""
        events = self.read()[:count]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(e) + "\n" for e in events))


@dataclass
class Evaluation:
    """One pass over a split: accuracies exact from counts and rounded once, as every record shows them."""

    accuracy: float
    balanced_accuracy: float
    loss: float
    predicted: torch.Tensor  # on the CPU


@torch.no_grad()
def evaluate(model: nn.Module, split: SplitImages, normalizer: Normalizer, batch_size: int, precision: str,
             channels_last: bool) -> Evaluation:
    """Accuracy, balanced accuracy, mean cross-entropy and predicted labels over a split."""
    model.eval()
    device = split.device
    loss_sum = torch.zeros((), device=device)
    predictions = []
    n_classes = 0
    for images, labels in split.batches(batch_size):
        inputs = normalizer(images)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast_context(precision, device):
            logits = model(inputs).float()
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum")
        predictions.append(logits.argmax(1))
        n_classes = logits.shape[1]
    predicted = torch.cat(predictions).cpu()
    accuracy, balanced = accuracy_scores(confusion_matrix(split.labels.cpu().numpy(), predicted.numpy(), n_classes))
    return Evaluation(accuracy, balanced, loss_sum.item() / len(split), predicted)


def accuracy_scores(confusion: np.ndarray) -> tuple[float, float]:
    """Accuracy and balanced accuracy (mean recall over the classes present), exact from counts, rounded to 6."""
    support = confusion.sum(1)
    present = np.flatnonzero(support)
    accuracy = Fraction(int(np.trace(confusion)), int(support.sum()))
    balanced = sum(Fraction(int(confusion[c, c]), int(support[c])) for c in present) / len(present)
    return round(float(accuracy), 6), round(float(balanced), 6)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts[true, predicted]."""
    return np.bincount(true * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_scores(confusion: np.ndarray) -> dict[str, list[float]]:
    """Precision and recall per class from a confusion matrix (0 where undefined)."""
    diagonal = np.diag(confusion).astype(float)
    predicted, actual = confusion.sum(0), confusion.sum(1)
    precision = np.divide(diagonal, predicted, out=np.zeros_like(diagonal), where=predicted > 0)
    recall = np.divide(diagonal, actual, out=np.zeros_like(diagonal), where=actual > 0)
    return {"precision": precision.round(6).tolist(), "recall": recall.round(6).tolist()}


def model_checkpoint(model: nn.Module, spec: RunSpec, extra_meta: dict) -> dict:
    """A galbench checkpoint: weights (still the model's own tensors: `cpu_copy` it) plus the facts that travel
    with the model."""
    return {"format": CHECKPOINT_FORMAT, "model": spec.model, "classes": list(spec.classes),
            "image_size": spec.image_size, "crop": spec.crop,
            "state_dict": {k: v.detach() for k, v in model.state_dict().items()},
            "meta": {"variant": spec.variant, "seed": spec.seed, "init": spec.init, **spec.meta, **extra_meta}}


def save_checkpoint(checkpoint: dict, path: Path) -> None:
    """torch.save through a temporary file and a rename."""
    # through a Python file object: torch then writes in chunks through file.write, which lets go of the GIL,
    # where given a path it holds the GIL for each whole tensor (tens of ms for AlexNet's largest), stalling
    # the training thread while checkpoints are written in the background
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(checkpoint, handle)


def cpu_copy(value):
    """A deep copy with every tensor copied to the CPU: a snapshot that later training steps cannot change."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: cpu_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(cpu_copy(item) for item in value)
    return value


class CheckpointWriter:
    """Writes checkpoint files in a background thread, one batch of files at a time.

    `submit` first waits for the previous batch, so at most one write is in flight and files land in
    order; `wait` re-raises a failed write (a full disk) in the training thread."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, files: list[tuple[dict, Path]], then: Callable[[], None] | None = None) -> None:
        """Write `(checkpoint, path)` pairs in order in the background, then call `then()` there."""
        self.wait()

        def write() -> None:
            try:
                for checkpoint, path in files:
                    save_checkpoint(checkpoint, path)
                if then:
                    then()
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread by wait()
                self._error = exc

        # not a daemon: an interpreter that is exiting finishes the write (or cleans its temporary file)
        self._thread = threading.Thread(target=write, name="galbench-checkpoint")
        self._thread.start()

    def wait(self) -> None:
        """Block until the write in flight has finished; raise its error, if it had one."""
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def join(self) -> None:
        """Block until the write in flight has finished, keeping any error for `wait`."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class Trainer:
    """The state of one run between epochs; `run()` below drives it."""

    def __init__(self, spec: RunSpec, train: SplitImages, val: SplitImages, run_dir: Path,
                 on_event: Callable[[dict], None] | None):
        self.spec, self.train_split, self.val_split, self.run_dir = spec, train, val, run_dir
        self.cfg = spec.train
        self.device = train.device
        self.precision = resolve_precision(self.cfg.precision, self.device)
        self.log = EventLog(run_dir / "events.jsonl")
        self.on_event = on_event or (lambda event: None)
        torch.manual_seed(spec.seed)
        self.model = build_model(spec.model, len(spec.classes), spec.image_size)
        if spec.init_state is not None:
            load_backbone(self.model, spec.init_state, spec.init)
        apply_finetune_policy(self.model, spec.finetune)
        self.model.to(self.device)
        if self.cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_flops = flops_per_sample(self.model, spec.image_size, self.device, backward=True)
        self.eval_flops = flops_per_sample(self.model, spec.image_size, self.device, backward=False)
        self.step_model = torch.compile(self.model) if self.cfg.compile else self.model
        self.normalizer = Normalizer().to(self.device)
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        weight = None
        if self.cfg.class_weights == "balanced":
            weight = torch.as_tensor(balanced_class_weights(train.labels.cpu().numpy(), len(spec.classes)),
                                     dtype=torch.float32, device=self.device)
        self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=self.cfg.label_smoothing)
        self.shuffle = torch.Generator().manual_seed(spec.seed)
        self.augment_rng = torch.Generator(device=self.device).manual_seed(spec.seed + 1)
        self.energy = EnergyMeter(self.device, spec.shared_gpu)
        self.watch = Stopwatch(self.device)
        self.costs = Costs(energy_joules=0.0 if self.energy.joules() is not None else None)
        self.epoch = 0
        self.step = 0  # optimizer steps taken
        self.best = {"val_accuracy": -1.0, "epoch": 0.0}
        self.best_checkpoint: dict | None = None  # this session's best, on the CPU (best.pt once written)
        self.best_unwritten = False
        self.reached: set[float] = set()
        self.steps_per_epoch = math.ceil(len(train) / self.cfg.batch_size)
        self.total_steps = total_steps(self.cfg, self.steps_per_epoch)
        self.eval_steps = eval_steps(self.cfg, self.steps_per_epoch)
        self.writer = CheckpointWriter()
        self.last_checkpoint_time = time.perf_counter()

    # --- persistence ---------------------------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        """Whether this epoch's end gets a last.pt, by `train.checkpoint_every` (the last epoch gets final.pt)."""
        every = self.cfg.checkpoint_every
        if isinstance(every, str):  # seconds, as "600s"
            return time.perf_counter() - self.last_checkpoint_time >= float(every[:-1])
        return self.epoch % every == 0

    def _unwritten_best(self) -> list[tuple[dict, Path]]:
        if not self.best_unwritten:
            return []
        self.best_unwritten = False
        return [(self.best_checkpoint, self.run_dir / "best.pt")]

    def save_final(self) -> None:
        """Write the final weights (final.pt, no optimizer state: nothing resumes from them) and the best
        weights, if new, in the background. Until run_stop is logged, a kill resumes from the last last.pt."""
        final = cpu_copy(model_checkpoint(self.model, self.spec, {"epochs": self.epoch}))
        self.writer.submit([*self._unwritten_best(), (final, self.run_dir / "final.pt")])

    def save_last(self, then: Callable[[], None] | None = None) -> None:
        """Snapshot the run's state on the CPU and write it (with the best weights, if new) in the background."""
        checkpoint = model_checkpoint(self.model, self.spec, {})
        rng = {"shuffle": self.shuffle.get_state(), "augment": self.augment_rng.get_state(),
               "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        checkpoint.update(optimizer=self.optimizer.state_dict(), rng=rng, epoch=self.epoch, step=self.step,
                          events_logged=len(self.log.read()), costs=self.costs.as_dict(), best=self.best,
                          reached=sorted(self.reached))
        # best.pt first: a kill between the two files resumes from the older last.pt, which redoes the epoch
        self.writer.submit([*self._unwritten_best(), (cpu_copy(checkpoint), self.run_dir / "last.pt")], then)
        self.last_checkpoint_time = time.perf_counter()

    def restore(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.shuffle.set_state(checkpoint["rng"]["shuffle"])
        self.augment_rng.set_state(checkpoint["rng"]["augment"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if "cuda" in checkpoint["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], self.device)
        self.epoch = checkpoint["epoch"]
        self.step = checkpoint.get("step", self.epoch * self.steps_per_epoch)  # older checkpoints: whole epochs
        self.costs = Costs(**checkpoint["costs"])
        self.best = dict(checkpoint["best"])
        self.reached = set(checkpoint["reached"])
        self.log.truncate(checkpoint["events_logged"])

    # --- the loop --------------------------------------------------------------------------------------
    def begin_session(self) -> None:
        """Start this process's clocks; totals carried from a checkpoint are added to them."""
        self.energy_start, self.energy_base = self.energy.joules() or 0.0, self.costs.energy_joules or 0.0
        self.session_wall_start, self.wall_base = time.perf_counter(), self.costs.wall_seconds

    @property
    def done(self) -> bool:
        """Whether the budget is spent."""
        return self.step >= self.total_steps

    def _eval_point(self, step_in_epoch: int) -> None:
        spec, costs = self.spec, self.costs
        start = self.watch.now()
        result = evaluate(self.step_model, self.val_split, self.normalizer, max(self.cfg.batch_size, 256),
                          self.precision, self.cfg.channels_last)
        costs.eval_device_seconds += self.watch.now() - start
        costs.eval_flops += self.eval_flops * len(self.val_split)
        joules = self.energy.joules()
        if joules is not None:
            costs.energy_joules = joules - self.energy_start + self.energy_base
        costs.wall_seconds = self.wall_base + time.perf_counter() - self.session_wall_start
        epochs = round(self.epoch + step_in_epoch / self.steps_per_epoch, 6)
        event = {"event": "eval", "epochs": epochs, "step": self.step, **costs.as_dict(),
                 "val_accuracy": result.accuracy, "val_balanced_accuracy": result.balanced_accuracy,
                 "val_loss": round(result.loss, 6), "lr": self.optimizer.param_groups[0]["lr"]}
        self.log.append(event)
        self.on_event(event)
        # the logged (rounded) value decides, so the live events and results_from_events agree
        metric = event[f"val_{spec.threshold_metric}"]
        for threshold in spec.thresholds:
            if threshold not in self.reached and metric >= threshold:
                self.reached.add(threshold)
                reached = {**event, "event": "threshold_reached", "threshold": threshold}
                self.log.append(reached)
                self.on_event(reached)
        # the best checkpoint is the best evaluation by the metric the thresholds are about
        key = f"val_{spec.threshold_metric}"
        if event[key] > self.best.get(key, -1.0):
            self.best = {"val_accuracy": result.accuracy, "val_balanced_accuracy": result.balanced_accuracy,
                         "epoch": epochs}
            self.best_unwritten = True
            self.best_checkpoint = cpu_copy(model_checkpoint(self.model, spec, {"val_accuracy": result.accuracy,
                                                                                "epochs": epochs}))
        self.step_model.train()
        keep_frozen_norms_in_eval(self.model)

    def _epoch_order(self) -> torch.Tensor:
        """The epoch's positions: a permutation, or a class-balanced draw with replacement (same length)."""
        if self.cfg.sampler == "balanced":
            return balanced_order(self.train_split.labels, self.shuffle)
        return torch.randperm(len(self.train_split), generator=self.shuffle)

    def train_one_epoch(self) -> bool:
        """One epoch, or what is left of the budget; returns whether it evaluated."""
        cfg, costs = self.cfg, self.costs
        order = self._epoch_order()
        evaluated = False
        self.step_model.train()
        keep_frozen_norms_in_eval(self.model)
        start = self.watch.now()
        for step_in_epoch, (images, labels) in enumerate(self.train_split.batches(cfg.batch_size, order), 1):
            lr = lr_at(self.step, self.total_steps, self.steps_per_epoch, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            images = augment(images, self.augment_rng, self.spec.augment.flips, self.spec.augment.rot90,
                             self.spec.augment.shift)
            inputs = self.normalizer(images)
            if cfg.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast_context(self.precision, self.device):
                loss = self.criterion(self.step_model(inputs).float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            costs.samples += labels.shape[0]
            costs.train_flops += self.train_flops * labels.shape[0]
            if self.step in self.eval_steps:
                costs.device_seconds += self.watch.now() - start
                self._eval_point(step_in_epoch)
                evaluated = True
                start = self.watch.now()
            if self.done:
                break
        costs.device_seconds += self.watch.now() - start  # the steps after the epoch's last evaluation
        self.epoch += 1
        return evaluated


def run(spec: RunSpec, train: SplitImages, val: SplitImages, test: SplitImages, run_dir: Path,
        on_event: Callable[[dict], None] | None = None, on_checkpoint: Callable[[], None] | None = None) -> dict:
    """Train one run to its end (resuming if it was interrupted) and return its results.

    `on_checkpoint()` is called whenever the run directory's files are consistent: once each checkpoint
    is written (from the writer's thread) and at the end (remote executors ship the files back then).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp"):  # a write cut short by a kill: never a checkpoint
        stale.unlink()
    log = EventLog(run_dir / "events.jsonl")
    logged = log.read()
    if any(e["event"] == "run_stop" for e in logged):
        return results_from_events(logged, spec.thresholds)
    trainer = Trainer(spec, train, val, run_dir, on_event)
    last = run_dir / "last.pt"
    if last.exists():
        trainer.restore(load_checkpoint(last))
        log.append({"event": "run_resume", "epoch": trainer.epoch, "step": trainer.step})
    else:
        log.path.unlink(missing_ok=True)
        log.append({"event": "run_start", "variant": spec.variant, "seed": spec.seed, "model": spec.model,
                    "init": spec.init, "finetune": spec.finetune, "device": str(trainer.device),
                    "precision": trainer.precision, "train_flops_per_sample": trainer.train_flops,
                    "eval_flops_per_sample": trainer.eval_flops, "train_size": len(train), "val_size": len(val),
                    "test_size": len(test), "classes": spec.classes, "thresholds": spec.thresholds,
                    "threshold_metric": spec.threshold_metric, "shared_gpu": spec.shared_gpu,
                    "budget": spec.train.budget(), "steps_per_epoch": trainer.steps_per_epoch,
                    "total_steps": trainer.total_steps, "evals": len(trainer.eval_steps),
                    "class_weights": spec.train.class_weights, "sampler": spec.train.sampler, **spec.meta})
    trainer.begin_session()
    try:
        while not trainer.done:
            evaluated = trainer.train_one_epoch()
            # an epoch without an evaluation (many short epochs on a small subset) is not worth a checkpoint
            if evaluated and not trainer.done and trainer.checkpoint_due():
                trainer.save_last(then=on_checkpoint)
        trainer.save_final()
        # the test evaluation overlaps the last write when this session holds the best weights in memory
        best = trainer.best_checkpoint
        if best is None:
            trainer.writer.wait()
            best = load_checkpoint(run_dir / "best.pt")
        trainer.model.load_state_dict(best["state_dict"])
        result = evaluate(trainer.model, test, trainer.normalizer, 256, trainer.precision, spec.train.channels_last)
        trainer.writer.wait()
    finally:
        trainer.writer.join()  # an interrupted run still finishes the write in flight
    confusion = confusion_matrix(test.labels.cpu().numpy(), result.predicted.numpy(), len(spec.classes))
    log.append({"event": "run_stop", "status": "success", "test_accuracy": result.accuracy,
                "test_balanced_accuracy": result.balanced_accuracy, "test_loss": round(result.loss, 6),
                "best_val_accuracy": round(trainer.best["val_accuracy"], 6),
                "best_val_balanced_accuracy": trainer.best.get("val_balanced_accuracy"),
                "best_epochs": trainer.best["epoch"],
                "confusion": confusion.tolist(), **per_class_scores(confusion),
                "test_predictions": result.predicted.tolist(), "test_labels": test.labels.cpu().tolist(),
                "test_rows": test.rows_in_catalog.tolist()})
    last.unlink(missing_ok=True)
    if on_checkpoint:
        on_checkpoint()
    return results_from_events(log.read(), spec.thresholds)


def planned_epochs(cfg: TrainSection, train_size: int) -> float:
    """How many epochs of a training set of `train_size` the run's budget amounts to."""
    steps_per_epoch = math.ceil(train_size / cfg.batch_size)
    return total_steps(cfg, steps_per_epoch) / steps_per_epoch


def results_from_events(events: list[dict], thresholds: list[float]) -> dict:
    """One run's results row, computed from its event log alone (fields an older log lacks are None)."""
    start = next(e for e in events if e["event"] == "run_start")
    stop = next((e for e in events if e["event"] == "run_stop"), None) or {}
    evals = [e for e in events if e["event"] == "eval"]
    metric = start.get("threshold_metric", "accuracy")
    crossings = threshold_crossings(evals, thresholds, f"val_{metric}")
    final = evals[-1] if evals else {}
    return {
        "variant": start["variant"], "seed": start["seed"], "model": start["model"], "init": start["init"],
        "train_size": start.get("train_size"), "train_size_label": start.get("train_size_label"),
        "replicate": start.get("replicate"), "pretrain_id": start.get("pretrain_id"),
        "pretrain_cost": start.get("pretrain_cost"), "shared_gpu": start.get("shared_gpu", False),
        "threshold_metric": metric, "finished": bool(stop),
        "final_val_accuracy": final.get("val_accuracy"), "best_val_accuracy": stop.get("best_val_accuracy"),
        "best_val_balanced_accuracy": stop.get("best_val_balanced_accuracy"),
        # what chose the run's best checkpoint, and chooses the exported winner: the thresholds' metric
        "best_val_score": stop.get(f"best_val_{metric}", stop.get("best_val_accuracy")),
        "test_accuracy": stop.get("test_accuracy"), "test_balanced_accuracy": stop.get("test_balanced_accuracy"),
        "confusion": stop.get("confusion"), "precision": stop.get("precision"), "recall": stop.get("recall"),
        "test_predictions": stop.get("test_predictions"), "test_labels": stop.get("test_labels"),
        "test_rows": stop.get("test_rows"),
        "totals": {k: final.get(k) for k in ("epochs", "samples", "train_flops", "eval_flops", "device_seconds",
                                              "eval_device_seconds", "wall_seconds", "energy_joules")},
        "thresholds": {str(t): v for t, v in crossings.items()},
        "curve": [{k: e.get(k) for k in ("epochs", "samples", "train_flops", "device_seconds", "val_accuracy",
                                         "val_balanced_accuracy", "val_loss")} for e in evals],
    }
