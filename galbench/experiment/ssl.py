"""Self-supervised pretraining on a survey's own images: SimCLR or BYOL, with probes, costs and resume.

A survey has far more unlabelled cutouts than labels. SimCLR (Chen et al. 2020; on SDSS, Hayat et al.
2021) pulls two views of the same galaxy together and pushes the other galaxies of the batch away; BYOL
(Grill et al. 2020) only predicts one view's projection from the other's through a slowly moving copy of
the network, so it needs no negatives and no large batches, which suits a CPU. The views are galaxy views
(galbench.data.views): turns, flips, small shifts and zooms, a PSF, sky noise, a per-band calibration
error, and never a colour change. Losses and heads come from lightly (`pip install 'galbench[ssl]'`).

The encoder is any registered model: its embedding (`forward_head(..., pre_logits=True)`) feeds a
projection head, so every architecture that follows galbench's model interface works. The pretraining
logs `run_start`, `ssl_epoch`, `probe`, `run_resume` and `run_stop` events, writes `last.pt` after every
epoch and resumes from it (on the CPU the resumed result equals an uninterrupted one), and is cached by a
hash of everything that made it.

Probes say whether the representation improves before any fine-tuning is spent on it: at the start, at a
few points and at the end, the frozen encoder embeds the suite's labelled training images (to fit) and
validation images (to score); a k-nearest-neighbour vote (cosine similarity) and a linear probe
(multinomial logistic regression) give two accuracies. The encoder never trains on these labels, and it
never sees a validation or test image at all: those rows are removed from the pretraining images, and so
is any row anywhere whose pixels are an exact copy of one of them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galbench.data.catalog import read_catalog, release_pages
from galbench.data.synth import cached_synth_catalog, synth_generation_seconds
from galbench.data.tensors import Normalizer, SplitImages, map_classes, stratified_split
from galbench.data.views import ViewParams, make_view
from galbench.errors import GalbenchError
from galbench.experiment.accounting import Costs, EnergyMeter, Stopwatch, count_flops, flops_per_sample
from galbench.experiment.suite import SUITE_IMAGES, PretrainedSection, Suite, TrainSection, ViewsSection
from galbench.experiment.train import (
    EventLog,
    autocast_context,
    lr_at,
    make_optimizer,
    resolve_precision,
    save_checkpoint,
)
from galbench.fileio import atomic_path, cache_dir, cache_entry, content_hash
from galbench.models.registry import build_model, embed, embedding_size
from galbench.models.weights import CHECKPOINT_FORMAT, load_checkpoint

SSL_WEIGHT_DECAY = 1e-4  # AdamW; small, as usual for contrastive pretraining
UNLABELLED = "unlabelled"  # the class list of a checkpoint made without probe labels (its head is untrained)
PROBE_SPLIT = (0.7, 0.15, 0.15)  # a probe catalog given on the command line is split like a suite's catalog
DIGEST_CHUNK = 4096
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def require_lightly():
    """lightly's losses and heads, or one line saying how to install them."""
    try:
        import lightly.loss
        import lightly.models.modules
        import lightly.models.utils
        import lightly.utils.scheduler
    except ImportError:
        raise GalbenchError("self-supervised pretraining needs the lightly package",
                            fix="pip install 'galbench[ssl]'") from None
    return lightly


@dataclass
class SSLSpec:
    """Everything a self-supervised pretraining computes from, besides its images."""

    method: str  # simclr | byol
    model: str
    image_size: int
    crop: float
    epochs: int
    lr: float
    batch_size: int
    views: ViewParams = ViewParams()
    temperature: float = 0.2
    momentum: float = 0.99
    projection_dim: int = 128
    hidden_dim: int = 512
    probes: int = 4
    knn_k: int = 20
    seed: int = 0
    source: dict = field(default_factory=dict)  # what the images are; goes into meta.pretrain_source

    def check(self) -> None:
        """Reject impossible values before any work starts (suites are checked when they are read)."""
        problems = [(self.method not in ("simclr", "byol"), f"method {self.method!r}: simclr or byol"),
                    (self.epochs < 1, "epochs must be at least 1"), (self.lr <= 0, "lr must be positive"),
                    (self.batch_size < 2, "batch size must be at least 2 (views are compared within a batch)"),
                    (self.temperature <= 0, "temperature must be positive"),
                    (not 0 <= self.momentum < 1, "momentum must be in [0, 1)"),
                    (self.probes < 1, "probes must be at least 1"), (self.knn_k < 1, "knn_k must be at least 1"),
                    (not 32 <= self.image_size <= 512, "image size must be between 32 and 512 pixels")]
        for bad, what in problems:
            if bad:
                raise GalbenchError(what, where="self-supervised pretraining")

    def identity(self) -> str:
        """A hash of everything that changes the result (the images are named in `source`)."""
        return content_hash(asdict(self), length=16)


@dataclass
class ProbeData:
    """Labelled images the probes fit on (`fit`) and score on (`score`); never pretrained on."""

    classes: list[str]
    fit: SplitImages
    score: SplitImages


class SSLNet(nn.Module):
    """An encoder (any registered model) with lightly's projection head, and BYOL's predictor and target."""

    def __init__(self, encoder: nn.Module, spec: SSLSpec):
        super().__init__()
        lightly = require_lightly()
        heads = lightly.models.modules
        self.method, self.momentum = spec.method, spec.momentum
        # no dropout while pretraining, as in SimCLR's and BYOL's ResNets: the two views already differ, and
        # dropout would add noise the embedding must learn to ignore (p is not a weight: checkpoints keep none)
        for module in encoder.modules():
            if isinstance(module, DROPOUTS):
                module.p = 0.0
        self.encoder = encoder
        features = embedding_size(encoder)
        if spec.method == "simclr":
            self.projection = heads.SimCLRProjectionHead(features, spec.hidden_dim, spec.projection_dim)
            self.criterion = lightly.loss.NTXentLoss(temperature=spec.temperature)
        else:
            self.projection = heads.BYOLProjectionHead(features, spec.hidden_dim, spec.projection_dim)
            self.prediction = heads.BYOLPredictionHead(spec.projection_dim, spec.hidden_dim, spec.projection_dim)
            self.target_encoder = copy.deepcopy(encoder)
            self.target_projection = copy.deepcopy(self.projection)
            lightly.models.utils.deactivate_requires_grad(self.target_encoder)
            lightly.models.utils.deactivate_requires_grad(self.target_projection)
            self.criterion = lightly.loss.NegativeCosineSimilarity()

    def loss(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        """The self-supervised loss of two views of the same images (normalised)."""
        z_a = self.projection(embed(self.encoder, view_a))
        z_b = self.projection(embed(self.encoder, view_b))
        if self.method == "simclr":
            return self.criterion(z_a.float(), z_b.float())
        p_a, p_b = self.prediction(z_a).float(), self.prediction(z_b).float()
        with torch.no_grad():
            t_a = self.target_projection(embed(self.target_encoder, view_a)).float()
            t_b = self.target_projection(embed(self.target_encoder, view_b)).float()
        return 0.5 * (self.criterion(p_a, t_b) + self.criterion(p_b, t_a))

    def after_step(self, step: int, total_steps: int) -> None:
        """BYOL: move the target towards the online network, its rate rising from `momentum` to 1."""
        if self.method != "byol":
            return
        lightly = require_lightly()
        rate = lightly.utils.scheduler.cosine_schedule(step, total_steps, self.momentum, 1.0)
        lightly.models.utils.update_momentum(self.encoder, self.target_encoder, rate)
        lightly.models.utils.update_momentum(self.projection, self.target_projection, rate)


def ssl_flops_per_image(net: SSLNet, image_size: int, device: torch.device) -> int:
    """FLOPs of one image's share of a training step: both views forward and backward (BYOL: + the target)."""
    probe = copy.deepcopy(net).train()  # a copy: the counting pass must not move batch-norm statistics
    return count_flops(lambda images: probe.loss(images, images).backward(), image_size, device)


# --- probes -----------------------------------------------------------------------------------------------
@torch.no_grad()
def embeddings(model: nn.Module, split: SplitImages, normalizer: Normalizer, batch_size: int = 256) -> torch.Tensor:
    """The frozen encoder's embeddings of a split (float32, on the CPU), dropout off."""
    was_training = model.training
    model.eval()
    parts = [embed(model, normalizer(images)).float().cpu() for images, _ in split.batches(batch_size)]
    model.train(was_training)
    return torch.cat(parts)


def knn_accuracy(fit_x: torch.Tensor, fit_y: torch.Tensor, score_x: torch.Tensor, score_y: torch.Tensor, k: int,
                 n_classes: int) -> float:
    """Accuracy of a k-nearest-neighbour majority vote under cosine similarity (ties: the lower class)."""
    fit = F.normalize(fit_x.float(), dim=1)
    score = F.normalize(score_x.float(), dim=1)
    k = min(k, fit.shape[0])
    correct = 0
    for start in range(0, score.shape[0], 512):  # bounded memory whatever the size of the fitting set
        nearest = (score[start:start + 512] @ fit.T).topk(k, dim=1).indices
        votes = F.one_hot(fit_y[nearest], n_classes).sum(1)
        correct += int((votes.argmax(1) == score_y[start:start + 512]).sum())
    return correct / score.shape[0]


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float | None = None,
                     max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on frozen embeddings; returns (weight (C, D), bias (C,)).

    Features are standardised (the fitting set's mean and spread) and the objective is the mean cross-
    entropy plus l2/2 |W|^2, by default l2 = 1/n: scikit-learn's default C = 1. L-BFGS in float64 on the
    CPU. The standardisation is folded into the returned weights, so they act on raw embeddings.
    """
    x = x.double().cpu()
    y = y.cpu()
    mean = x.mean(0)
    spread = x.std(0, unbiased=False)
    spread = torch.where(spread > 1e-8, spread, torch.ones_like(spread))  # constant (dead) features
    z = (x - mean) / spread
    l2 = 1.0 / x.shape[0] if l2 is None else l2
    weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small problem: threads only wait on each other (20x slower on a busy machine)
    try:
        optimizer.step(objective)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        raw_weight = weight / spread
        return raw_weight.float(), (bias - raw_weight @ mean).float()


def probe_epochs(epochs: int, probes: int) -> list[int]:
    """The epochs after which probes run: 0 (before training), then `probes` points evenly, the last at the end."""
    return sorted({0} | {round(k * epochs / probes) for k in range(1, probes + 1)})


def plot_probe_curve(curve: list[dict], majority: float | None, title: str, path: Path) -> None:
    """Probe accuracies against pretraining epochs, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    epochs = [point["epoch"] for point in curve]
    ax.plot(epochs, [p["knn_accuracy"] for p in curve], "o-", label="k-NN (cosine)")
    ax.plot(epochs, [p["linear_probe_accuracy"] for p in curve], "s-", label="linear probe")
    if majority is not None:
        ax.axhline(majority, color="grey", linestyle="--", linewidth=1, label="majority class")
    ax.set_xlabel("pretraining epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


# --- the loop ----------------------------------------------------------------------------------------------
class SSLTrainer:
    """The state of one self-supervised pretraining between epochs; `pretrain_ssl()` drives it."""

    def __init__(self, spec: SSLSpec, images: SplitImages, probe: ProbeData | None, run_dir: Path):
        self.spec, self.images, self.probe = spec, images, probe
        self.device = images.device
        self.precision = resolve_precision("auto", self.device)
        self.log = EventLog(run_dir / "events.jsonl")
        self.run_dir = run_dir
        torch.manual_seed(spec.seed)
        self.classes = probe.classes if probe else [UNLABELLED]
        self.net = SSLNet(build_model(spec.model, len(self.classes), spec.image_size), spec).to(self.device)
        self.train_flops = ssl_flops_per_image(self.net, spec.image_size, self.device)
        self.eval_flops = flops_per_sample(self.net.encoder, spec.image_size, self.device, backward=False)
        self.normalizer = Normalizer().to(self.device)
        self.batch = min(spec.batch_size, len(images))
        if self.batch < 2:
            raise GalbenchError(f"self-supervised pretraining needs at least 2 images, got {len(images)}")
        self.cfg = TrainSection(optimizer="adamw", lr=spec.lr, weight_decay=SSL_WEIGHT_DECAY, epochs=spec.epochs,
                                batch_size=self.batch, schedule="cosine")
        self.optimizer = make_optimizer(self.net, self.cfg)
        self.shuffle = torch.Generator().manual_seed(spec.seed)
        self.view_rng = torch.Generator(device=self.device).manual_seed(spec.seed + 1)
        self.steps_per_epoch = len(images) // self.batch  # the last, smaller batch is dropped (batch norm)
        self.energy = EnergyMeter(self.device)
        self.watch = Stopwatch(self.device)
        self.costs = Costs(energy_joules=0.0 if self.energy.joules() is not None else None)
        self.epoch = 0
        self.head: tuple[torch.Tensor, torch.Tensor] | None = None  # the latest linear probe

    def save_last(self) -> None:
        rng = {"shuffle": self.shuffle.get_state(), "views": self.view_rng.get_state(),
               "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = {"format": CHECKPOINT_FORMAT, "net": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                 "optimizer": self.optimizer.state_dict(), "rng": rng, "epoch": self.epoch,
                 "events_logged": len(self.log.read()), "costs": self.costs.as_dict(), "head": self.head}
        save_checkpoint(state, self.run_dir / "last.pt")

    def restore(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.shuffle.set_state(state["rng"]["shuffle"])
        self.view_rng.set_state(state["rng"]["views"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch, self.costs, self.head = state["epoch"], Costs(**state["costs"]), state["head"]
        self.log.truncate(state["events_logged"])

    def begin_session(self) -> None:
        """Start this process's clocks; totals carried from a checkpoint are added to them."""
        self.energy_start, self.energy_base = self.energy.joules() or 0.0, self.costs.energy_joules or 0.0
        self.session_wall_start, self.wall_base = time.perf_counter(), self.costs.wall_seconds

    def _clock(self) -> None:
        joules = self.energy.joules()
        if joules is not None:
            self.costs.energy_joules = joules - self.energy_start + self.energy_base
        self.costs.wall_seconds = self.wall_base + time.perf_counter() - self.session_wall_start

    def train_one_epoch(self) -> None:
        spec, costs = self.spec, self.costs
        order = torch.randperm(len(self.images), generator=self.shuffle)
        total_steps = spec.epochs * self.steps_per_epoch
        loss_sum = torch.zeros((), device=self.device)
        self.net.train()
        start = self.watch.now()
        for step, (images, _) in enumerate(self.images.batches(self.batch, order)):
            if step == self.steps_per_epoch:
                break
            global_step = self.epoch * self.steps_per_epoch + step
            lr = lr_at(global_step, total_steps, self.steps_per_epoch, self.cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            view_a = self.normalizer(make_view(images, self.view_rng, spec.views))
            view_b = self.normalizer(make_view(images, self.view_rng, spec.views))
            with autocast_context(self.precision, self.device):
                loss = self.net.loss(view_a, view_b)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.net.after_step(global_step, total_steps)
            loss_sum += loss.detach()
            costs.samples += images.shape[0]
            costs.train_flops += self.train_flops * images.shape[0]
        costs.device_seconds += self.watch.now() - start
        self.epoch += 1
        self._clock()
        self.log.append({"event": "ssl_epoch", "epoch": self.epoch, "loss": round(loss_sum.item() / self.steps_per_epoch, 6),
                    "lr": self.optimizer.param_groups[0]["lr"], **costs.as_dict()})

    def run_probe(self) -> None:
        """k-NN and linear-probe accuracy of the current encoder; logged as a `probe` event."""
        if self.probe is None:
            return
        start = self.watch.now()
        encoder, n_classes = self.net.encoder, len(self.classes)
        fit_x = embeddings(encoder, self.probe.fit, self.normalizer)
        score_x = embeddings(encoder, self.probe.score, self.normalizer)
        fit_y, score_y = self.probe.fit.labels.cpu(), self.probe.score.labels.cpu()
        knn = knn_accuracy(fit_x, fit_y, score_x, score_y, self.spec.knn_k, n_classes)
        weight, bias = fit_linear_probe(fit_x, fit_y, n_classes)
        linear = float(((score_x @ weight.T + bias).argmax(1) == score_y).float().mean())
        self.head = (weight, bias)
        self.costs.eval_device_seconds += self.watch.now() - start
        self.costs.eval_flops += self.eval_flops * (len(self.probe.fit) + len(self.probe.score))
        self._clock()
        self.log.append({"event": "probe", "epoch": float(self.epoch), "knn_accuracy": round(knn, 6),
                    "linear_probe_accuracy": round(linear, 6), **self.costs.as_dict()})

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The encoder's weights, its classifier head set to the last linear probe where the shapes fit."""
        encoder = copy.deepcopy(self.net.encoder).cpu()
        head = encoder.get_submodule(encoder.head_name)
        if self.head is not None and isinstance(head, nn.Linear) and head.weight.shape == self.head[0].shape:
            with torch.no_grad():
                head.weight.copy_(self.head[0])
                head.bias.copy_(self.head[1])
        return {k: v.detach() for k, v in encoder.state_dict().items()}


def pretrain_ssl(spec: SSLSpec, images: SplitImages, probe: ProbeData | None, out: Path, display=None,
                 generation_seconds: float = 0.0) -> Path:
    """Self-supervised pretraining of `spec.model` on `images` (labels unused); writes a galbench checkpoint.

    Beside `out` go the event log (`.events.jsonl`) and, with probes, their plot (`.probe.png`). Work in
    progress lives in `out.work/` and is resumed from there by the same call.
    """
    spec.check()
    work = out.with_name(out.name + ".work")
    identity = spec.identity()
    log = EventLog(work / "events.jsonl")
    start = next((e for e in log.read() if e["event"] == "run_start"), None)
    if start is None or start.get("identity") != identity:  # nothing, or another pretraining's leftovers
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    trainer = SSLTrainer(spec, images, probe, work)
    due = set(probe_epochs(spec.epochs, spec.probes))
    last = work / "last.pt"
    resuming = last.exists()
    if resuming:
        trainer.restore(load_checkpoint(last))
        log.append({"event": "run_resume", "epoch": trainer.epoch})
    trainer.begin_session()
    if not resuming:
        log.path.unlink(missing_ok=True)
        log.append({"event": "run_start", "kind": "ssl", "identity": identity, "method": spec.method,
                    "model": spec.model, "device": str(trainer.device), "precision": trainer.precision,
                    "train_flops_per_image": trainer.train_flops, "eval_flops_per_image": trainer.eval_flops,
                    "images": len(images), "batch_size": trainer.batch, "epochs": spec.epochs,
                    "probe_fit_size": len(probe.fit) if probe else 0,
                    "probe_score_size": len(probe.score) if probe else 0, "classes": trainer.classes,
                    "source": spec.source})
        trainer.run_probe()
    bar = display.bar(f"pretraining {spec.method}", spec.epochs, "epochs") if display \
        else contextlib.nullcontext(lambda n=1: None)
    with bar as advance:
        advance(trainer.epoch)
        while trainer.epoch < spec.epochs:
            trainer.train_one_epoch()
            if trainer.epoch in due:
                trainer.run_probe()
            trainer.save_last()
            advance(1)
    events = log.read()
    curve = [{"epoch": e["epoch"], "knn_accuracy": e["knn_accuracy"],
              "linear_probe_accuracy": e["linear_probe_accuracy"]} for e in events if e["event"] == "probe"]
    losses = [{"epoch": e["epoch"], "loss": e["loss"]} for e in events if e["event"] == "ssl_epoch"]
    cost = {key: trainer.costs.as_dict()[key] for key in ("samples", "train_flops", "eval_flops", "device_seconds",
                                                          "eval_device_seconds", "wall_seconds", "energy_joules")}
    cost["generation_seconds"] = round(generation_seconds, 3)  # simulating a synth catalog, where one was made
    majority = None
    if probe is not None:
        majority = float(np.bincount(probe.score.labels.cpu().numpy()).max() / len(probe.score))
    checkpoint = {"format": CHECKPOINT_FORMAT, "model": spec.model, "classes": list(trainer.classes),
                  "image_size": spec.image_size, "crop": spec.crop, "state_dict": trainer.encoder_state(),
                  "meta": {"variant": f"pretrain-{spec.method}", "seed": spec.seed, "init": "scratch",
                           "suite": "pretrain", "pretrain_cost": cost,
                           "pretrain_source": {"kind": "ssl", "method": spec.method, **spec.source},
                           "probe_curve": curve, "probe_majority_accuracy": majority, "ssl_loss_curve": losses}}
    log.append({"event": "run_stop", "status": "success", "final_loss": losses[-1]["loss"] if losses else None,
                **({"knn_accuracy": curve[-1]["knn_accuracy"],
                    "linear_probe_accuracy": curve[-1]["linear_probe_accuracy"]} if curve else {})})
    save_checkpoint(checkpoint, out)
    with atomic_path(out.with_name(out.stem + ".events.jsonl")) as tmp:
        shutil.copyfile(log.path, tmp)
    if curve:
        plot_probe_curve(curve, majority, f"{spec.method} on {spec.source.get('images', 'images')}, {spec.model}",
                         out.with_name(out.stem + ".probe.png"))
    shutil.rmtree(work, ignore_errors=True)
    return out


# --- which images: the suite's own (never its validation or test rows) or another catalog ----------------
def image_digests(images: np.ndarray, rows: np.ndarray) -> list[bytes]:
    """A 16-byte BLAKE2 digest of each row's pixels (streamed in chunks from a memory map)."""
    digests = []
    for start in range(0, rows.size, DIGEST_CHUNK):
        chunk = np.ascontiguousarray(images[rows[start:start + DIGEST_CHUNK]])
        digests += [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in chunk]
        release_pages(images, int(rows[start]), int(rows[min(start + DIGEST_CHUNK, rows.size) - 1]) + 1)
    return digests


def suite_splits(suite: Suite, labels: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Every train/val/test split the suite's runs use (one, or one per seed with `split.per_seed`).

    The pretraining rows are computed against all of them: with one split per seed, `catalog = "train"`
    means the rows in every seed's training split and in no seed's validation or test split.
    """
    split = suite.data.split
    return [stratified_split(labels, (split.train, split.val, split.test), seed) for seed in suite.split_seeds().values()]


def pretraining_rows(which: str, n_rows: int, splits: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Rows of the suite's catalog a pretraining may use: "train" or "unlabelled", never a val or test row."""
    held_out = np.unique(np.concatenate([split[part] for split in splits for part in ("val", "test")]))
    if which == "train":
        rows = splits[0]["train"]
        for split in splits[1:]:
            rows = np.intersect1d(rows, split["train"])
    elif which == "unlabelled":
        rows = np.arange(n_rows)
    else:
        raise GalbenchError(f"unknown suite image set {which!r}", fix=f"one of {', '.join(SUITE_IMAGES)}")
    return np.setdiff1d(rows, held_out)


def without_copies(images: np.ndarray, rows: np.ndarray, held_out: set[bytes]) -> tuple[np.ndarray, int]:
    """Drop rows whose pixels exactly copy a held-out image; returns the rows kept and how many were dropped."""
    keep = np.array([digest not in held_out for digest in image_digests(images, rows)], dtype=bool)
    return rows[keep], int((~keep).sum())


def _spec_from_section(section: PretrainedSection, model: str, image_size: int, crop: float, source: dict) -> SSLSpec:
    views = section.views or ViewsSection()
    return SSLSpec(method=section.method, model=model, image_size=image_size, crop=crop, epochs=section.epochs,
                   lr=section.lr, batch_size=section.batch_size, views=ViewParams(**views.model_dump()),
                   temperature=section.temperature, momentum=section.momentum,
                   projection_dim=section.projection_dim, hidden_dim=section.hidden_dim, probes=section.probes,
                   knn_k=section.knn_k, source=source)


def _digest_of(rows: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


@dataclass
class SSLPlan:
    """What a suite's self-supervised pretraining reads and where its checkpoint goes (nothing made yet)."""

    path: Path
    spec: SSLSpec
    catalog: object  # the Catalog pretrained on
    rows: np.ndarray
    suite_catalog: object
    classes: list[str]
    labels: np.ndarray
    probe_rows: dict[str, np.ndarray]
    generation_seconds: float  # simulating the images, where a synth table was made for this pretraining


def plan_ssl_pretraining(section: PretrainedSection, model: str, suite: Suite, base: Path, replicate: int = 0,
                         progress=None) -> SSLPlan:
    """The images, probes and cache path of one replicate of a suite's self-supervised pretraining.

    Replicate r trains with seed r on the same images; replicate 0 keeps the cache key it always had.
    """
    suite_file = suite.catalog_file(base, progress)
    suite_catalog = read_catalog(suite_file)
    classes, labels = map_classes(suite_catalog, suite.data.classes, suite.data.ttype_bins)
    splits = suite_splits(suite, labels)
    held_out_rows = np.unique(np.concatenate([s[part] for s in splits for part in ("val", "test")]))
    held_out = set(image_digests(suite_catalog.images, held_out_rows))
    generation_seconds = 0.0  # the suite's own images, or a catalog file, existed already
    if section.catalog in SUITE_IMAGES:
        catalog, catalog_file = suite_catalog, suite_file
        rows = pretraining_rows(section.catalog, len(catalog), splits)
        image_size, crop = section.image_size or suite.data.image_size, suite.data.crop
        images_name = f"the suite's {section.catalog} images"
    else:
        if section.synth is not None:
            catalog_file = cached_synth_catalog(section.synth.model_dump(), progress)
            generation_seconds = synth_generation_seconds(section.synth.model_dump()) or 0.0
        else:
            catalog_file = section.catalog_file(base)
        catalog = read_catalog(catalog_file)
        rows = np.arange(len(catalog))
        image_size, crop = section.image_size or suite.data.image_size, 1.0
        images_name = catalog_file.name
    rows, dropped = without_copies(catalog.images, rows, held_out)
    probe_rows = {"fit": splits[0]["train"], "score": splits[0]["val"]}
    source = {"name": section.name, "images": images_name, "catalog": str(catalog_file.resolve()),
              "catalog_mtime": catalog_file.stat().st_mtime, "rows": int(rows.size), "rows_digest": _digest_of(rows),
              "held_out_copies_dropped": dropped, "probe_classes": classes,
              "probe_digest": _digest_of(np.concatenate([probe_rows["fit"], probe_rows["score"],
                                                         labels[probe_rows["fit"]], labels[probe_rows["score"]]])),
              "probe_crop": suite.data.crop, "probe_image_size": suite.data.image_size}
    spec = _spec_from_section(section, model, image_size, crop, source)
    spec.seed = replicate
    path = cache_dir("pretrain") / f"ssl-{spec.method}-{spec.identity()}.pt"
    return SSLPlan(path, spec, catalog, rows, suite_catalog, classes, labels, probe_rows, generation_seconds)


def ensure_ssl_pretraining(section: PretrainedSection, model: str, suite: Suite, base: Path, device: torch.device,
                           display=None, replicate: int = 0) -> Path:
    """A suite's self-supervised pretraining (one replicate), made on first use and cached by what made it."""
    require_lightly()
    plan = plan_ssl_pretraining(section, model, suite, base, replicate, display.bar if display else None)
    with cache_entry(plan.path, "cached pretraining") as missing:
        if missing:
            _pretrain_planned(plan, suite, device, display)
    return plan.path


def _pretrain_planned(plan: SSLPlan, suite: Suite, device: torch.device, display) -> Path:
    spec = plan.spec
    budget = suite.data.memory_budget_mb * 2**20
    images = SplitImages.build(plan.catalog.images, plan.rows, np.zeros(len(plan.catalog), dtype=np.int64),
                               spec.crop, spec.image_size, device, budget)
    probe = ProbeData(plan.classes, *(SplitImages.build(plan.suite_catalog.images, plan.probe_rows[part], plan.labels,
                                                        suite.data.crop, suite.data.image_size, device, budget)
                                      for part in ("fit", "score")))
    return pretrain_ssl(spec, images, probe, plan.path, display=display, generation_seconds=plan.generation_seconds)


def pretrain_ssl_files(out: Path, data: Path, probe_data: Path | None, spec: SSLSpec, device: torch.device,
                       display=None) -> Path:
    """The `galbench pretrain ssl` command: pretrain on every image of `data` except copies of the probe's
    validation and test images; probes fit on `probe_data`'s training part and score on its validation part."""
    require_lightly()
    spec.check()
    catalog = read_catalog(data)
    rows = np.arange(len(catalog))
    probe = None
    budget = 4 * 2**30
    if probe_data is not None:
        probe_catalog = catalog if Path(probe_data).resolve() == Path(data).resolve() else read_catalog(probe_data)
        labels = probe_catalog.labels
        split = stratified_split(labels, PROBE_SPLIT, 0)
        held_out = set(image_digests(probe_catalog.images, np.concatenate([split["val"], split["test"]])))
        rows, dropped = without_copies(catalog.images, rows, held_out)
        probe = ProbeData(list(probe_catalog.classes),
                          *(SplitImages.build(probe_catalog.images, split[part], labels, 1.0, spec.image_size,
                                              device, budget) for part in ("train", "val")))
        spec.source.update(held_out_copies_dropped=dropped, probe_catalog=str(probe_data))
    spec.source.update(images=Path(data).name, catalog=str(data), rows=int(rows.size))
    images = SplitImages.build(catalog.images, rows, np.zeros(len(catalog), dtype=np.int64), 1.0, spec.image_size,
                               device, budget)
    return pretrain_ssl(spec, images, probe, Path(out), display=display)
