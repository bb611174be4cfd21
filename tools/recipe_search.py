"""Search for a training recipe on the Galaxy Zoo 1 sample that is judged by balanced accuracy, on the CPU.

Issue 15: a plain PyTorch loop beat galbench's shipped `suites/gz1.toml`. This script trains one recipe
at a time with its own plain loop (no galbench Trainer), but on galbench's data path, so that a winning
recipe transfers to a suite unchanged: catalogs made by `galbench data import`, the split made by
`galbench.data.tensors.stratified_split(labels, (0.7, 0.15, 0.15), seed=0)`, `prepare_images`, the
device-side `augment` and the `Normalizer`.

The task is the one of `suites/gz1.toml`: elliptical (GZ1 class 0), spiral (1 + 2), edge-on (3); classes
4 and 5 dropped; 3,896 galaxies; 72% ellipticals, so every run logs balanced accuracy (the mean of the
per-class recalls) and each class's recall beside accuracy, per epoch, with the process CPU-seconds used.

A recipe is a set of `key=value` pairs (see `Recipe` below): model (`alexnet`, `alexnet-half`,
`alexnet-small` from galbench's registry, each optionally with batch norm after every conv as `...-bn`, or
`timm:NAME`), image size, crop, optimizer, learning rate, schedule (`onecycle` or `cosine` with warm-up),
epochs, batch size, label smoothing, class-weighted loss, class-balanced sampling, augmentation.

Every finished run is appended to a JSON-lines file at once (nothing is lost if the search is interrupted)
and a rerun skips recipes already there (the key is the recipe itself), so a stage can be restarted with
the same command. Each run keeps two checkpoints outside git (final weights and the epoch with the best
validation balanced accuracy); the test split is evaluated only by the `test` command, once per run.

Rerun the search (from the repository root; the 45 runs took 5,370 CPU-seconds at one thread, 2.6 hours of
wall time on a shared 2-core machine; docs/recipe-search.md has the results):

    export PYTHONPATH=$PWD
    python tools/recipe_search.py run --stage micro     # alexnet-small(-bn): resolution x balancing x batch norm
    python tools/recipe_search.py run --stage micro2    # one change at a time: smoothing, shift, SGD, schedule, crop
    python tools/recipe_search.py run --stage coarse    # wider models at 1/3 of the CPU budget
    python tools/recipe_search.py run --stage plain     # the issue's plain loop (full AlexNet, 64 px) on this split
    python tools/recipe_search.py run --stage seeds     # the chosen recipe, its unbalanced twin, the shipped one
    python tools/recipe_search.py test --stage seeds    # test split, once per run
    python tools/recipe_search.py summary               # Markdown tables to stdout, JSON to --json

The GPU recipes (not yet measured here): `python tools/recipe_search.py --device cuda run --stage gpu`, then
`test --stage gpu` and `summary`; there the CPU-seconds count only the host process, so read wall seconds.

One recipe of your own: `python tools/recipe_search.py run --recipe model=alexnet-bn size=96 epochs=30`.
CPU cost of one epoch for a model and size: `python tools/recipe_search.py cost --recipe model=alexnet`.
Data and checkpoints live in `--work` (default /tmp/recipe); catalogs missing there are made with
`python -m galbench.cli data import SOURCE ...` from `--source` (default ../shared/data/gz1-sdss).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from galbench.data.catalog import read_catalog
from galbench.data.tensors import Normalizer, augment, prepare_images, stratified_split
from galbench.models.alexnet import AlexNet

CLASSES = ("elliptical", "spiral", "edge-on")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
CPU_BUDGET_SECONDS = 1200.0  # two cores for ten minutes
WIDTHS = {  # galbench's registry widths: conv channels, hidden units
    "alexnet": ((64, 192, 384, 256, 256), 4096),
    "alexnet-half": ((32, 96, 192, 128, 128), 2048),
    "alexnet-small": ((16, 48, 96, 64, 64), 256),
}


@dataclass(frozen=True)
class Recipe:
    """One training recipe; the defaults are the plain loop's (SGD, one-cycle, flips and turns, crop 0.5)."""

    model: str = "alexnet"
    size: int = 64
    crop: float = 0.5
    optimizer: str = "sgd"  # sgd (momentum 0.9) | adamw
    lr: float = 0.01  # the peak learning rate
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine (linear warm-up, then cosine to zero)
    warmup_epochs: float = 0.0  # cosine only; one-cycle warms up over its first 30%
    epochs: int = 40
    batch_size: int = 64
    label_smoothing: float = 0.0
    class_weights: str = "none"  # none | balanced (weight of class c = N / (K * N_c)) | sqrt (its square root)
    sampler: str = "shuffle"  # shuffle | balanced (each class drawn equally often, with replacement)
    flips: bool = True
    rot90: bool = True
    shift: int = 0
    dropout: float = 0.5  # AlexNet's classifier dropout
    seed: int = 0

    def key(self) -> str:
        """A short stable id of the recipe (the resume key and the checkpoints' name)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def differences(self) -> str:
        """The keys that differ from the defaults, as `key=value` (how tables name a recipe)."""
        default = Recipe()
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                        if getattr(self, f.name) != getattr(default, f.name)) or "defaults"


def parse_recipe(pairs: list[str], base: Recipe | None = None) -> Recipe:
    """A recipe from `key=value` strings, typed by the dataclass fields."""
    fields = {f.name: f.type for f in dataclasses.fields(Recipe)}
    values = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if name not in fields:
            sys.exit(f"unknown recipe key {name!r}; keys: {', '.join(fields)}")
        kind = fields[name]
        values[name] = text.lower() in ("1", "true", "yes") if kind == "bool" else \
            int(text) if kind == "int" else float(text) if kind == "float" else text
    return dataclasses.replace(base or Recipe(), **values)


# --- models -----------------------------------------------------------------------------------------------

def with_batch_norm(model: AlexNet) -> AlexNet:
    """Insert BatchNorm2d after every conv (before its ReLU), as torchvision's `vgg*_bn` do.

    The conv biases become redundant and are dropped. Layer indices inside `features` shift, as in VGG-BN.
    """
    layers = []
    for layer in model.features:
        if isinstance(layer, nn.Conv2d):
            conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                             bias=False)
            layers += [conv, nn.BatchNorm2d(layer.out_channels)]
        else:
            layers.append(layer)
    model.features = nn.Sequential(*layers)
    return model


def build(recipe: Recipe) -> nn.Module:
    """The recipe's model with a 3-class head, from the seed in `recipe`."""
    torch.manual_seed(recipe.seed)
    if recipe.model.startswith("timm:"):
        import timm

        return timm.create_model(recipe.model.removeprefix("timm:"), num_classes=len(CLASSES), pretrained=False)
    name = recipe.model.removesuffix("-bn")
    if name not in WIDTHS:
        sys.exit(f"unknown model {recipe.model!r}; choose {', '.join(WIDTHS)} (optionally -bn) or timm:NAME")
    channels, hidden = WIDTHS[name]
    model = AlexNet(len(CLASSES), channels, hidden, dropout=recipe.dropout)
    return with_batch_norm(model) if recipe.model.endswith("-bn") else model


# --- data -------------------------------------------------------------------------------------------------

def catalog_path(work: Path, source: Path, crop: float, size: int) -> Path:
    """The catalog for (crop, size) under `work`, made with galbench's importer if missing."""
    path = work / (f"gz1-{size}.fits" if crop == 0.5 else f"gz1-c{crop}-{size}.fits")
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "galbench.cli", "data", "import", str(source), str(path),
                        "--class-column", "gz1_class", "--map", "elliptical=0", "--map", "spiral=1,2",
                        "--map", "edge-on=3", "--crop", str(crop), "--size", str(size)], check=True)
    return path


def load_splits(path: Path, size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) per split, split exactly as galbench splits a suite's catalog."""
    catalog = read_catalog(path)
    if tuple(catalog.classes) != CLASSES:
        sys.exit(f"{path}: classes {catalog.classes}, expected {CLASSES}")
    labels = catalog.labels
    rows = stratified_split(labels, SPLIT_FRACTIONS, seed=0)
    return {name: (prepare_images(catalog.images[index], 1.0, size), torch.as_tensor(labels[index]))
            for name, index in rows.items()}


# --- the loop ---------------------------------------------------------------------------------------------

def lr_factor(recipe: Recipe, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate / peak at a step: torch's OneCycleLR shape (cosine up over 30% from 1/25, cosine down to
    1/25e4), or a linear warm-up followed by a cosine to zero (galbench's `cosine` with `warmup_epochs`)."""
    if recipe.schedule == "onecycle":
        peak_step = 0.3 * total_steps
        if step < peak_step:
            low, progress = 1 / 25, step / peak_step
            return 1 - (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))
        low, progress = 1 / 25 / 1e4, (step - peak_step) / max(1.0, total_steps - peak_step)
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))


def class_weights(labels: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """sklearn's 'balanced' weights N / (K * N_c), to a power (0.5: half-way to balance on a log scale)."""
    counts = torch.bincount(labels, minlength=len(CLASSES)).float()
    return (labels.numel() / (len(CLASSES) * counts)) ** power


def epoch_order(labels: torch.Tensor, sampler: str, generator: torch.Generator) -> torch.Tensor:
    """One epoch's sample order: a permutation, or len(labels) draws with every class equally likely."""
    if sampler == "balanced":
        return torch.multinomial(class_weights(labels)[labels], labels.numel(), replacement=True,
                                 generator=generator)
    return torch.randperm(labels.numel(), generator=generator)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, normalizer: Normalizer) -> torch.Tensor:
    """Predicted labels for uint8 images."""
    model.eval()
    return torch.cat([model(normalizer(images[i:i + 512])).argmax(1) for i in range(0, len(images), 512)])


def scores(labels: torch.Tensor, predicted: torch.Tensor) -> dict:
    """Accuracy, balanced accuracy (mean recall), per-class recall and the confusion matrix."""
    k = len(CLASSES)
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).view(k, k)
    recall = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    return {"accuracy": round(float((labels == predicted).float().mean()), 4),
            "balanced_accuracy": round(sum(recall) / k, 4), "recall": [round(r, 4) for r in recall],
            "confusion": confusion.tolist()}


def train(recipe: Recipe, splits: dict, checkpoints: Path, device: torch.device) -> dict:
    """Train one recipe; log every epoch; save final and best-balanced-accuracy weights; return the record.

    `splits` are on `device`. Sample order and augmentation draws come from CPU generators, so a recipe
    draws the same batches on any device.
    """
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    model = build(recipe).to(device)
    normalizer = Normalizer().to(device)
    train_images, train_labels = splits["train"]
    cpu_labels = train_labels.cpu()
    val_images, val_labels = splits["val"]
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    weight = None if recipe.class_weights == "none" else \
        class_weights(train_labels, {"balanced": 1.0, "sqrt": 0.5}[recipe.class_weights])
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=recipe.label_smoothing)
    order_rng = torch.Generator().manual_seed(recipe.seed)
    augment_rng = torch.Generator().manual_seed(recipe.seed + 1)
    steps_per_epoch = math.ceil(len(train_labels) / recipe.batch_size)
    total_steps = recipe.epochs * steps_per_epoch
    curve, best, step = [], None, 0
    eval_cpu_seconds = 0.0
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = epoch_order(cpu_labels, recipe.sampler, order_rng).to(device)
        loss_sum = 0.0
        for start in range(0, order.numel(), recipe.batch_size):
            index = order[start:start + recipe.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * lr_factor(recipe, step, total_steps, steps_per_epoch)
            images = augment(train_images[index], augment_rng, recipe.flips, recipe.rot90, recipe.shift)
            loss = criterion(model(normalizer(images)), train_labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * index.numel()
            step += 1
        eval_start = time.process_time()
        val = scores(val_labels, predict(model, val_images, normalizer))
        eval_cpu_seconds += time.process_time() - eval_start
        point = {"epoch": epoch, "train_loss": round(loss_sum / order.numel(), 4), **val,
                 "cpu_seconds": round(time.process_time() - cpu_start, 1)}
        del point["confusion"]
        curve.append(point)
        print(f"  epoch {epoch:3d}  loss {point['train_loss']:.3f}  val acc {val['accuracy']:.3f}  "
              f"bal {val['balanced_accuracy']:.3f}  recall {val['recall']}  cpu {point['cpu_seconds']:.0f}s",
              flush=True)
        if best is None or val["balanced_accuracy"] > best["balanced_accuracy"]:
            best = point
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, checkpoints / f"{recipe.key()}-best.pt")
        if not math.isfinite(point["train_loss"]):
            break
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, checkpoints / f"{recipe.key()}-final.pt")
    last3 = curve[-3:]
    return {"key": recipe.key(), "recipe": dataclasses.asdict(recipe), "final": curve[-1], "best": best,
            "last3_balanced_accuracy": round(sum(p["balanced_accuracy"] for p in last3) / len(last3), 4),
            "last3_accuracy": round(sum(p["accuracy"] for p in last3) / len(last3), 4),
            "cpu_seconds": round(time.process_time() - cpu_start, 1), "eval_cpu_seconds": round(eval_cpu_seconds, 1),
            "wall_seconds": round(time.perf_counter() - wall_start, 1),
            "parameters": sum(p.numel() for p in model.parameters()), "curve": curve,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device_name(device)}


# --- stages -----------------------------------------------------------------------------------------------

def stage_recipes(stage: str) -> list[tuple[str, Recipe]]:
    """The recipes of one stage, with a label each. Later stages were written after reading earlier ones."""
    r = Recipe
    small = dict(model="alexnet-small", optimizer="adamw", lr=2e-3, weight_decay=0.05, epochs=40)
    if stage == "micro":
        runs = [("shipped gz1.toml (alexnet-small 64 px, AdamW cosine, 15 ep)",
                 r(model="alexnet-small", optimizer="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine",
                   epochs=15, shift=2))]
        for size in (64, 96, 112):
            for bn in ("", "-bn"):
                for balance in ("none", "weights", "sampler"):
                    if size == 112 and not bn and balance != "none":
                        continue  # pruned under load: batch norm had won at 64 and 96 px with every balancing
                    runs.append((f"small{bn} {size}px {balance}",
                                 r(**{**small, "model": "alexnet-small" + bn}, size=size,
                                   class_weights="balanced" if balance == "weights" else "none",
                                   sampler="balanced" if balance == "sampler" else "shuffle")))
        return runs
    small_bn = dict(small, model="alexnet-small-bn", sampler="balanced")
    if stage == "micro2":  # one change at a time from the micro stage's best (small-bn, 64 px, sampler)
        return [("small-bn 64px sampler, label smoothing 0.1", r(**small_bn, label_smoothing=0.1)),
                ("small-bn 64px sampler, shift 2", r(**small_bn, shift=2)),
                ("small-bn 64px sampler, SGD 0.05", r(**{**small_bn, "optimizer": "sgd", "lr": 0.05,
                                                          "weight_decay": 5e-4})),
                ("small-bn 64px sampler, cosine warm-up 2", r(**small_bn, schedule="cosine", warmup_epochs=2)),
                ("small-bn 64px sampler, 100 epochs", r(**{**small_bn, "epochs": 100})),
                ("small-bn 64px sampler, crop 0.4", r(**small_bn, crop=0.4)),
                ("small-bn 64px sampler, crop 0.6", r(**small_bn, crop=0.6)),
                ("small-bn 64px sqrt weights", r(**{**small_bn, "sampler": "shuffle"}, class_weights="sqrt"))]
    # micro2 found one-cycle and cosine with a 2-epoch warm-up alike; galbench has the latter today
    wide = dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine", warmup_epochs=2, size=112,
                sampler="balanced", epochs=40)
    if stage == "coarse":  # width at about 1/3 of the CPU budget or less, batch norm, 112 px
        return [("small-bn 112px sampler cosine", r(**wide, model="alexnet-small-bn")),
                ("half-bn 112px sampler", r(**wide, model="alexnet-half-bn")),
                ("half-bn 112px no balancing", r(**{**wide, "sampler": "shuffle"}, model="alexnet-half-bn")),
                ("full-bn 112px sampler, 12 ep", r(**{**wide, "lr": 1e-3, "epochs": 12}, model="alexnet-bn")),
                ("resnet18 64px sampler, 20 ep", r(**{**wide, "size": 64, "epochs": 20}, model="timm:resnet18"))]
    chosen = dict(wide, model="alexnet-small-bn")
    if stage == "seeds":  # the chosen recipe, its unbalanced twin and the shipped suite, over seeds
        shipped = dict(model="alexnet-small", optimizer="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine",
                       epochs=15, shift=2)
        return [*((f"chosen: small-bn 112px sampler, seed {seed}", r(**chosen, seed=seed)) for seed in range(5)),
                *((f"twin: small-bn 112px no balancing, seed {seed}", r(**{**chosen, "sampler": "shuffle"},
                                                                          seed=seed)) for seed in range(3)),
                *((f"shipped gz1.toml, seed {seed}", r(**shipped, seed=seed)) for seed in range(3)),
                # added after the twin had matched the plain loop's accuracy: half-way balance (sqrt weights)
                *((f"half-way: small-bn 112px sqrt weights, seed {seed}",
                   r(**{**chosen, "sampler": "shuffle"}, class_weights="sqrt", seed=seed)) for seed in range(5))]
    if stage == "plain":  # the plain loop on galbench's split: torchvision AlexNet, 64 px, SGD one-cycle
        return [("plain loop: alexnet 64px SGD one-cycle, 40 ep", r())]
    if stage == "gpu":  # not yet measured (no GPU was lent): the chosen recipe at the cutout's native
        # resolution (crop 0.5 of 423 px is 212 px), and the paper's full-width model with batch norm
        gpu = dict(chosen, size=224, epochs=60)
        return [*((f"gpu: small-bn 224px sampler, seed {seed}", r(**gpu, seed=seed)) for seed in range(3)),
                *((f"gpu: full-bn 224px sampler, seed {seed}", r(**{**gpu, "model": "alexnet-bn", "lr": 1e-3}, seed=seed))
                  for seed in range(3))]
    raise SystemExit(f"unknown stage {stage!r}")


def device_name(device: torch.device) -> str:
    """What ran a run: the GPU's name, or the CPU's model name from /proc/cpuinfo where there is one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{names[0]} ({len(names)} cores)" if names else "cpu"


def read_jsonl(path: Path) -> list[dict]:
    """Every complete record of a JSON-lines file (none if it does not exist)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record and flush it."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def cmd_run(args) -> None:
    runs = [("recipe", " ".join(args.recipe), parse_recipe(args.recipe))] if args.recipe else []
    for stage in args.stage or []:
        runs += [(stage, label, recipe) for label, recipe in stage_recipes(stage)]
    results = args.work / "results.jsonl"
    done = {record["key"] for record in read_jsonl(results)}
    checkpoints = args.work / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    splits_cache: dict[tuple[float, int], dict] = {}
    for stage, label, recipe in runs:
        if recipe.key() in done:
            print(f"skip (done) {label}")
            continue
        if (recipe.crop, recipe.size) not in splits_cache:
            splits_cache.clear()  # one resolution in memory at a time
            path = catalog_path(args.work, args.source, recipe.crop, recipe.size)
            splits_cache[(recipe.crop, recipe.size)] = {
                name: (images.to(device), labels.to(device))
                for name, (images, labels) in load_splits(path, recipe.size).items()}
        print(f"run {recipe.key()} {label}: {recipe.differences()}", flush=True)
        record = train(recipe, splits_cache[(recipe.crop, recipe.size)], checkpoints, device)
        record.update(label=label, stage=stage, finished_unix=round(time.time()))
        append_jsonl(results, record)
        done.add(recipe.key())
        print(f"done {label}: val acc {record['final']['accuracy']:.3f} bal {record['final']['balanced_accuracy']:.3f}"
              f" (last 3: {record['last3_balanced_accuracy']:.3f}) cpu {record['cpu_seconds']:.0f}s", flush=True)


def cmd_test(args) -> None:
    results = read_jsonl(args.work / "results.jsonl")
    tests_path = args.work / "tests.jsonl"
    tested = {record["key"] for record in read_jsonl(tests_path)}
    chosen = [r for r in results if r["key"] in (args.key or [])]
    for stage in args.stage or []:
        chosen += stage_runs(stage, results)
    for record in chosen:
        if record["key"] in tested:
            print(f"already tested {record['key']} ({record['label']}): the test split is evaluated once")
            continue
        recipe = Recipe(**record["recipe"])
        images, labels = load_splits(catalog_path(args.work, args.source, recipe.crop, recipe.size),
                                     recipe.size)["test"]
        entry = {"key": record["key"], "label": record["label"]}
        for which in ("final", "best"):
            model = build(recipe)
            state = torch.load(args.work / "checkpoints" / f"{record['key']}-{which}.pt", weights_only=True)
            model.load_state_dict(state)
            entry[which] = scores(labels, predict(model, images, Normalizer()))
        append_jsonl(tests_path, entry)
        tested.add(record["key"])
        print(f"test {record['label']}: final {entry['final']['accuracy']:.3f} / "
              f"{entry['final']['balanced_accuracy']:.3f} recall {entry['final']['recall']}")


def cmd_cost(args) -> None:
    """Measure the CPU-seconds of one training epoch (2,727 images) and one validation pass (584)."""
    recipe = parse_recipe(args.recipe)
    model, normalizer = build(recipe), Normalizer()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randint(0, 256, (recipe.batch_size, 3, recipe.size, recipe.size), dtype=torch.uint8)
    labels = torch.randint(0, len(CLASSES), (recipe.batch_size,))
    steps = 6
    for step in range(steps + 1):
        if step == 1:
            start = time.process_time()
        loss = nn.functional.cross_entropy(model(normalizer(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_seconds = (time.process_time() - start) / (steps * recipe.batch_size) * 2727
    start = time.process_time()
    predict(model, images.repeat(4, 1, 1, 1), normalizer)
    eval_seconds = (time.process_time() - start) / (4 * recipe.batch_size) * 584
    per_epoch = train_seconds + eval_seconds
    print(f"{recipe.model} {recipe.size}px: {per_epoch:.1f} CPU-s per epoch ({train_seconds:.1f} train, "
          f"{eval_seconds:.1f} validation) -> {int(CPU_BUDGET_SECONDS / per_epoch)} epochs in "
          f"{CPU_BUDGET_SECONDS:.0f} CPU-s at {torch.get_num_threads()} thread(s)")


def markdown_table(records: list[dict], tests: dict[str, dict]) -> str:
    """One row per run: recipe, validation figures (final epoch, last-3 mean, best), CPU-seconds, test."""
    lines = ["| run | recipe | val acc | val bal. acc | recall ell / spi / edge | last-3 bal. acc | "
             "best bal. acc (epoch) | CPU-s | test acc / bal. acc (final weights) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for record in records:
        final, best = record["final"], record["best"]
        test = tests.get(record["key"])
        test_text = f"{test['final']['accuracy']:.3f} / {test['final']['balanced_accuracy']:.3f}" if test else ""
        lines.append(f"| {record['label']} | `{Recipe(**record['recipe']).differences()}` | "
                     f"{final['accuracy']:.3f} | {final['balanced_accuracy']:.3f} | "
                     f"{' / '.join(f'{r:.2f}' for r in final['recall'])} | {record['last3_balanced_accuracy']:.3f} | "
                     f"{best['balanced_accuracy']:.3f} ({best['epoch']}) | {record['cpu_seconds']:.0f} | {test_text} |")
    return "\n".join(lines)


STAGES = ("micro", "micro2", "coarse", "plain", "seeds", "gpu")
THRESHOLDS = (0.7, 0.75, 0.78, 0.8, 0.82)


def stage_runs(stage: str, results: list[dict]) -> list[dict]:
    """The finished runs of a stage, in the stage's order and under its labels (a run shared by two stages,
    such as the seeds stage's seed 0, appears in both)."""
    by_key = {record["key"]: record for record in results}
    return [{**by_key[recipe.key()], "label": label} for label, recipe in stage_recipes(stage)
            if recipe.key() in by_key]


def first_epoch(curve: list[dict], metric: str, threshold: float) -> int | None:
    """The first epoch whose validation `metric` reaches `threshold` (None if none does)."""
    return next((point["epoch"] for point in curve if point[metric] >= threshold), None)


def seed_groups(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by their label without the `, seed k` suffix."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(run["label"].rsplit(", seed", 1)[0], []).append(run)
    return groups


def mean_sd(values: list[float]) -> str:
    """`mean ± sample sd` (just the value for one run)."""
    array = np.asarray(values, dtype=float)
    return f"{array.mean():.3f}" if array.size == 1 else f"{array.mean():.3f} ± {array.std(ddof=1):.3f}"


def seeds_tables(runs: list[dict], tests: dict[str, dict]) -> str:
    """Per recipe over seeds: validation and test figures (mean ± sd), then epochs to each threshold."""
    lines = ["| recipe | seeds | val acc | val bal. acc | test acc | test bal. acc | test recall ell / spi / edge "
             "| test acc / bal. acc, best-val-bal.-acc weights | CPU-s |", "| --- |" + " --- |" * 8]
    for name, group in seed_groups(runs).items():
        tested = [tests[r["key"]] for r in group if r["key"] in tests]
        row = [name, ", ".join(str(r["recipe"]["seed"]) for r in group),
               mean_sd([r["final"]["accuracy"] for r in group]),
               mean_sd([r["final"]["balanced_accuracy"] for r in group])]
        if tested:
            recall = np.mean([t["final"]["recall"] for t in tested], axis=0)
            row += [mean_sd([t["final"]["accuracy"] for t in tested]),
                    mean_sd([t["final"]["balanced_accuracy"] for t in tested]),
                    " / ".join(f"{value:.2f}" for value in recall),
                    f"{mean_sd([t['best']['accuracy'] for t in tested])} / "
                    f"{mean_sd([t['best']['balanced_accuracy'] for t in tested])}"]
        else:
            row += ["not tested"] * 4
        row.append(f"{np.mean([r['cpu_seconds'] for r in group]):.0f}")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Validation thresholds: runs that reached each one / median first epoch (of those that did).", "",
              "| recipe | metric | " + " | ".join(str(t) for t in THRESHOLDS) + " |",
              "| --- | --- |" + " --- |" * len(THRESHOLDS)]
    for name, group in seed_groups(runs).items():
        for metric in ("balanced_accuracy", "accuracy"):
            cells = []
            for threshold in THRESHOLDS:
                epochs = [e for e in (first_epoch(r["curve"], metric, threshold) for r in group) if e is not None]
                cells.append(f"{len(epochs)}/{len(group)}" + (f", {np.median(epochs):g}" if epochs else ""))
            lines.append(f"| {name} | {metric.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_summary(args) -> None:
    results = read_jsonl(args.work / "results.jsonl")
    tests = {record["key"]: record for record in read_jsonl(args.work / "tests.jsonl")}
    for stage in STAGES:
        runs = stage_runs(stage, results)
        if runs:
            print(f"\n### Stage {stage}\n")
            print(markdown_table(runs, tests))
    for stage in ("seeds", "gpu"):
        runs = stage_runs(stage, results)
        if runs:
            print(f"\n### Stage {stage} over seeds\n")
            print(seeds_tables(runs, tests))
    if args.json:
        compact = [{**{k: r[k] for k in ("key", "stage", "label", "recipe", "final", "best", "cpu_seconds",
                                         "wall_seconds", "last3_balanced_accuracy", "parameters")},
                    "val_balanced_accuracy_per_epoch": [p["balanced_accuracy"] for p in r["curve"]],
                    "val_accuracy_per_epoch": [p["accuracy"] for p in r["curve"]],
                    "test": tests.get(r["key"])} for r in results]
        args.json.write_text("[\n" + ",\n".join(json.dumps(run) for run in compact) + "\n]\n")  # a run a line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/recipe"), help="catalogs, results, checkpoints")
    parser.add_argument("--source", type=Path, default=Path("../shared/data/gz1-sdss"), help="the GZ1 sample")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (run only; CPU-seconds then "
                        "measure the host process, and wall seconds the GPU's work)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train the recipes of stages (or one --recipe), skipping finished ones")
    run.add_argument("--stage", action="append", help=" | ".join(STAGES))
    run.add_argument("--recipe", nargs="+", help="key=value pairs of one recipe")
    test = commands.add_parser("test", help="evaluate finished runs on the test split, once each")
    test.add_argument("--stage", action="append")
    test.add_argument("--key", action="append")
    cost = commands.add_parser("cost", help="CPU-seconds per epoch of one recipe's model and size")
    cost.add_argument("--recipe", nargs="*", default=[])
    summary = commands.add_parser("summary", help="Markdown tables of every run")
    summary.add_argument("--json", type=Path, help="also write a compact JSON of every run here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"run": cmd_run, "test": cmd_test, "cost": cmd_cost, "summary": cmd_summary}[args.command](args)


if __name__ == "__main__":
    main()
