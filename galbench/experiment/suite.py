"""Suite files: TOML in, a validated `Suite` out. Typos, wrong types and impossible values fail before any work.

The format is documented, with an annotated example, in the README.
"""

from __future__ import annotations

import copy
import difflib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from galbench.errors import GalbenchError
from galbench.fileio import content_hash, relative_path
from galbench.models.registry import check_model_name

# suites shipped inside the package, runnable by name from any folder (`galbench run quickstart`)
PACKAGED_SUITES = Path(__file__).resolve().parents[1] / "suites"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _exactly_one_source(section, message: str):
    """Data comes from a catalog file or a synth table, never both or neither."""
    if (section.catalog is None) == (section.synth is None):
        raise ValueError(message)
    return section


Fraction = Annotated[float, Field(gt=0, lt=1)]


class SuiteSection(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seeds: int | list[int] = 3
    thresholds: list[Annotated[float, Field(gt=0, le=1)]] = [0.7, 0.8, 0.85, 0.9]
    threshold_metric: Literal["accuracy", "balanced_accuracy"] = "accuracy"  # the validation metric they are about
    baseline: str | None = None
    # label efficiency: every (variant, size, seed) is a run on a nested stratified subset of the training split
    train_sizes: list[Annotated[int, Field(ge=1)] | Literal["all"]] | None = None
    per_class: bool = False  # train_sizes count galaxies per class rather than in total

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value):
        if isinstance(value, int):
            if value < 1:
                raise ValueError("seeds must be at least 1")
            return list(range(value))
        if not value or len(set(value)) != len(value):
            raise ValueError("seeds must be a non-empty list without repeats")
        return value

    @field_validator("thresholds")
    @classmethod
    def _sorted(cls, value):
        return sorted(set(value))

    @field_validator("train_sizes")
    @classmethod
    def _sizes(cls, value):
        if value is None:
            return value
        if not value or len(set(value)) != len(value):
            raise ValueError("train_sizes must be a non-empty list without repeats")
        return sorted(size for size in value if size != "all") + ["all"] * ("all" in value)

    @model_validator(mode="after")
    def _per_class(self):
        if self.per_class and self.train_sizes is None:
            raise ValueError("per_class = true needs suite.train_sizes")
        return self

    def size_label(self, size: int | str | None) -> str | None:
        """How a train size is named in run directories and results: `300`, `all`, `30-per-class`."""
        if size is None or size == "all":
            return size
        return f"{size}-per-class" if self.per_class else str(size)


class SynthSection(_Strict):
    n: int = Field(2000, ge=10)
    size: int = Field(64, ge=32, le=512)
    seed: int = 0
    classes: str = "elliptical,spiral,edge-on"
    star_probability: float = Field(0.3, ge=0, le=1)


class SplitSection(_Strict):
    train: Fraction = 0.7
    val: Fraction = 0.15
    test: Fraction = 0.15
    seed: int = Field(0, ge=0)
    per_seed: bool = False  # each run seed its own split (the same for every arm at that seed)

    @model_validator(mode="after")
    def _sum(self):
        if abs(self.train + self.val + self.test - 1) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {self.train + self.val + self.test:g}")
        return self


class AugmentSection(_Strict):
    flips: bool = True
    rot90: bool = True
    shift: int = Field(2, ge=0, le=32)


class DataSection(_Strict):
    catalog: str | None = None
    synth: SynthSection | None = None
    create_with: str | None = None  # the command that makes `catalog`, quoted when it is missing
    classes: dict[str, list[int | str]] | None = None
    ttype_bins: dict[str, tuple[float, float]] | None = None  # class name -> [low, high] of a `ttype` column
    split: SplitSection = SplitSection()
    image_size: int = Field(64, ge=64, le=512)  # AlexNet needs at least 63 px
    crop: float = Field(1.0, gt=0, le=1)
    augment: AugmentSection = AugmentSection()
    memory_budget_mb: int = Field(2048, ge=1)

    @model_validator(mode="after")
    def _one_source(self):
        if self.classes is not None and self.ttype_bins is not None:
            raise ValueError("give data.classes or data.ttype_bins, not both")
        if self.ttype_bins and any(low > high for low, high in self.ttype_bins.values()):
            raise ValueError("each data.ttype_bins entry is [low, high] with low <= high")
        return _exactly_one_source(self, "give exactly one of data.catalog (a FITS path) or a [data.synth] table")


BUDGET_KEYS, GRID_KEYS = ("epochs", "steps"), ("evals_per_epoch", "evals")
DEFAULT_EPOCHS, DEFAULT_EVALS_PER_EPOCH, DEFAULT_EVALS = 10, 1, 10


class TrainSection(_Strict):
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["constant", "cosine", "step", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    # the budget: epochs over the run's training set, or optimizer steps (default: 10 epochs)
    epochs: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    # the evaluation grid: per epoch, or per run spread evenly over its steps
    # (default: 1 per epoch with an epochs budget, 10 per run with a steps budget)
    evals_per_epoch: int | None = Field(None, ge=1, le=100)
    evals: int | None = Field(None, ge=1, le=1000)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    compile: bool = False
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = "none"  # balanced: cross-entropy weighted by 1 / class frequency
    sampler: Literal["shuffle", "balanced"] = "shuffle"  # balanced: classes drawn equally often, with replacement
    checkpoint_every: int | str = 1  # epochs between last.pt writes, or seconds as "600s"

    @field_validator("checkpoint_every")
    @classmethod
    def _checkpoint_every(cls, value):
        if isinstance(value, int) and value >= 1:
            return value
        if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?s", value) and float(value[:-1]) > 0:
            return value
        raise ValueError(f"checkpoint_every is a number of epochs (at least 1) or of seconds (\"600s\"), "
                         f"not {value!r}")

    @model_validator(mode="after")
    def _budget(self):
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give epochs or steps, not both")
        if self.evals_per_epoch is not None and self.evals is not None:
            raise ValueError("give evals_per_epoch or evals, not both")
        if self.steps is not None and self.evals_per_epoch is not None:
            raise ValueError("evals_per_epoch needs an epochs budget; with steps give evals (evaluations per run)")
        if self.schedule == "onecycle" and self.warmup_epochs:
            raise ValueError("schedule onecycle warms up by itself (the first 30% of the steps); "
                             "set warmup_epochs = 0")
        return self

    def budget(self) -> dict:
        """The budget and evaluation grid with defaults filled in: what makes two arms' time axes comparable."""
        if self.steps is not None:
            return {"steps": self.steps, "evals": self.evals or DEFAULT_EVALS}
        epochs = self.epochs or DEFAULT_EPOCHS
        if self.evals is not None:
            return {"epochs": epochs, "evals": self.evals}
        return {"epochs": epochs, "evals_per_epoch": self.evals_per_epoch or DEFAULT_EVALS_PER_EPOCH}


def _budget_text(budget: dict) -> str:
    return ", ".join(f"{key} = {value}" for key, value in budget.items())


def merged_train(base: dict, overrides: dict) -> dict:
    """A [train] table with overrides applied; an override of the budget or the grid replaces the base's."""
    merged = dict(base)
    for keys in (BUDGET_KEYS, GRID_KEYS):
        if any(key in overrides for key in keys):
            merged.update(dict.fromkeys(keys))
    return {**merged, **overrides}


# A preset fills the keys a fractal table leaves out. "cpu" is galbench's small set (what the defaults have
# always been); "fractaldb-1k" is Kataoka et al.'s FractalDB-1k: 1,000 categories x 1,000 instances made by
# their recipe (see galbench.data.fractal), pretrained for their 90 epochs at their batch size of 256.
FRACTAL_PRESETS = {
    "cpu": {"classes": 32, "per_class": 64, "recipe": "galbench", "epochs": 8, "batch_size": 128},
    "fractaldb-1k": {"classes": 1000, "per_class": 1000, "recipe": "fractaldb", "epochs": 90, "batch_size": 256},
}


class FractalSection(_Strict):
    preset: Literal["cpu", "fractaldb-1k"] = "cpu"
    classes: int = Field(32, ge=2)
    per_class: int = Field(64, ge=1)
    size: int = Field(64, ge=32, le=512)
    seed: int = 0
    recipe: Literal["galbench", "fractaldb"] = "galbench"
    epochs: int = Field(8, ge=1)
    lr: float = Field(0.001, gt=0)  # AdamW
    batch_size: int = Field(128, ge=1)
    replicates: int = Field(1, ge=1)  # independent pretrainings (fractal sets and training seeds seed, seed + 1, ...)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, values):
        if isinstance(values, dict):
            preset = FRACTAL_PRESETS.get(values.get("preset", "cpu"), {})
            values = {**preset, **values}
        return values


class ViewsSection(_Strict):
    """How the two views of a galaxy differ in self-supervised pretraining (galbench.data.views.ViewParams)."""

    flips: bool = True
    rot90: bool = True
    shift: int = Field(4, ge=0, le=32)  # pixels
    zoom: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]] = (0.5, 1.0)
    blur_sigma: tuple[Annotated[float, Field(ge=0, le=10)], Annotated[float, Field(ge=0, le=10)]] = (0.1, 1.5)
    noise: float = Field(0.02, ge=0, le=0.5)  # fraction of the full scale
    band_scale: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _ranges(self):
        if self.zoom[0] > self.zoom[1] or self.blur_sigma[0] > self.blur_sigma[1]:
            raise ValueError("zoom and blur_sigma are [low, high] with low <= high")
        return self


SUITE_IMAGES = ("train", "unlabelled")  # catalog names meaning the suite's own images, labels dropped
SSL_KEYS = {"views": None, "temperature": "simclr", "momentum": "byol", "projection_dim": None, "hidden_dim": None,
            "probes": None, "knn_k": None}


class PretrainedSection(_Strict):
    """A named in-suite pretraining: supervised on another catalog, or self-supervised (simclr, byol).

    Self-supervised pretraining ignores labels; `catalog` may then also be "train" (the suite's training
    images) or "unlabelled" (every row of the suite's catalog outside its validation and test splits).
    """

    name: str
    method: Literal["supervised", "simclr", "byol"] = "supervised"
    catalog: str | None = None
    synth: SynthSection | None = None
    image_size: int | None = None
    epochs: int = Field(8, ge=1)
    lr: float = Field(0.001, gt=0)  # AdamW
    batch_size: int = Field(128, ge=1)
    replicates: int = Field(1, ge=1)  # independent pretrainings on the same catalog (training seeds 0, 1, ...)
    views: ViewsSection | None = None  # None: ViewsSection's defaults
    temperature: float = Field(0.2, gt=0, le=10)  # simclr: NT-Xent temperature
    momentum: float = Field(0.99, ge=0, lt=1)  # byol: the target network's EMA rate at the start (cosine to 1)
    projection_dim: int = Field(128, ge=2)
    hidden_dim: int = Field(512, ge=2)
    probes: int = Field(4, ge=1)  # probe points after the one before training, evenly spaced, the last at the end
    knn_k: int = Field(20, ge=1)

    def catalog_file(self, base: Path) -> Path:
        """The file a pretraining on a catalog file reads (relative to the suite file); it must exist."""
        path = relative_path(self.catalog, base)
        if not path.exists():
            raise GalbenchError("pretraining catalog not found", where=str(path))
        return path

    @model_validator(mode="after")
    def _one_source(self):
        _exactly_one_source(self, "give exactly one of catalog or synth")
        if self.method == "supervised":
            given = sorted(set(SSL_KEYS) & self.model_fields_set)
            if given:
                raise ValueError(f"{', '.join(given)}: only for self-supervised pretraining "
                                 "(method = \"simclr\" or \"byol\")")
            if self.catalog in SUITE_IMAGES:
                raise ValueError(f"catalog = {self.catalog!r} (the suite's own images) needs a self-supervised "
                                 "method: supervised pretraining on them would be training on the task itself")
        for key, method in SSL_KEYS.items():
            if method and key in self.model_fields_set and self.method != method:
                raise ValueError(f"{key} applies to method = {method!r} only")
        if self.method != "supervised" and self.batch_size < 2:
            raise ValueError("self-supervised pretraining needs batch_size >= 2 (views are compared within a batch)")
        return self


class Variant(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model: str = "alexnet"
    init: str = "scratch"
    finetune: str = "all"
    fractal: FractalSection | None = None
    train: dict[str, Any] = {}

    @field_validator("model")
    @classmethod
    def _model(cls, value):
        try:
            check_model_name(value)  # caught here, before any run directory exists
        except GalbenchError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("init")
    @classmethod
    def _init(cls, value):
        kind = value.split(":", 1)[0]
        if kind not in ("scratch", "imagenet", "zoobot", "checkpoint", "fractal", "pretrained"):
            raise ValueError(f"unknown init {value!r}: use scratch, imagenet, imagenet:PATH, zoobot:NAME|PATH, "
                             "checkpoint:PATH, fractal or pretrained:NAME")
        if kind in ("zoobot", "checkpoint", "pretrained") and ":" not in value:
            raise ValueError(f"init {kind} needs a value: {kind}:...")
        return value


COSTS_TO = {"epochs": "epochs", "samples": "samples", "flops": "train_flops", "device_seconds": "device_seconds",
            "energy_joules": "energy_joules"}


class AnalysisSection(_Strict):
    """What the statistics test first and how: the primary endpoint, the error rate, an equivalence margin."""

    # test_accuracy | test_balanced_accuracy | <cost>_to:<threshold>; None: not declared (test_accuracy, and the
    # report says it was a default)
    primary: str | None = None
    alpha: float = Field(0.05, gt=0, lt=1)
    equivalence: float | None = Field(None, gt=0, lt=1)  # an accuracy margin within which arms count as equal
    allow_unequal_budgets: bool = False  # compare time to threshold across arms with different budgets or grids


class ExecutorSection(_Strict):
    kind: Literal["local", "ray"] = "local"
    address: str | None = None  # Ray: auto, ray://HOST:PORT, or none for a Ray started here
    cpus_per_run: float = Field(1, gt=0)
    gpus_per_run: float = Field(0, ge=0)  # fractional for small models
    max_retries: int = Field(2, ge=0)


class Suite(_Strict):
    suite: SuiteSection
    data: DataSection
    train: TrainSection = TrainSection()
    executor: ExecutorSection = ExecutorSection()
    analysis: AnalysisSection = AnalysisSection()
    variant: list[Variant] = Field(min_length=1)
    pretrained: list[PretrainedSection] = []

    @model_validator(mode="after")
    def _cross_checks(self):
        names = [v.name for v in self.variant]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {', '.join(names)}")
        pretrained_names = {p.name for p in self.pretrained}
        for variant in self.variant:
            if variant.init.startswith("pretrained:") and variant.init.split(":", 1)[1] not in pretrained_names:
                raise ValueError(f"variant {variant.name!r}: no [[pretrained]] entry named "
                                 f"{variant.init.split(':', 1)[1]!r}")
        if self.suite.baseline is not None and self.suite.baseline not in names:
            raise ValueError(f"baseline {self.suite.baseline!r} is not a variant name ({', '.join(names)})")
        self.primary_endpoint()
        self._check_budgets()
        for variant in self.variant:
            if self.replicates_for(variant) > len(self.suite.seeds):
                raise ValueError(f"variant {variant.name!r}: {self.replicates_for(variant)} pretraining replicates "
                                 f"for {len(self.suite.seeds)} seeds would leave some unused")
        return self

    def _check_budgets(self) -> None:
        """Arms with different budgets or evaluation grids have time axes that do not line up: refuse them."""
        if self.analysis.allow_unequal_budgets:
            return
        budgets = {}
        for variant in self.variant:
            try:
                budgets[variant.name] = self.train_for(variant).budget()
            except ValidationError:
                continue  # load_suite names the bad override
        first, *others = budgets or [None]
        for name in others:
            if budgets[name] != budgets[first]:
                raise ValueError(f"variants {first!r} ({_budget_text(budgets[first])}) and {name!r} "
                                 f"({_budget_text(budgets[name])}) have different budgets or evaluation grids, so their "
                                 "times to threshold do not line up; give every arm the same budget, or set "
                                 "analysis.allow_unequal_budgets = true")

    def primary_endpoint(self) -> dict:
        """The parsed `analysis.primary`: an accuracy, or a cost to reach one of the suite's thresholds."""
        primary = self.analysis.primary or "test_accuracy"
        if primary in ("test_accuracy", "test_balanced_accuracy"):
            return {"kind": "accuracy", "metric": primary}
        cost, sep, threshold = primary.partition("_to:")
        choices = ", ".join(f"{c}_to:<threshold>" for c in COSTS_TO)
        if not sep or cost not in COSTS_TO:
            raise ValueError(f"analysis.primary {primary!r}: use test_accuracy, test_balanced_accuracy or {choices}")
        try:
            value = float(threshold)
        except ValueError:
            value = None
        if value not in self.suite.thresholds:
            raise ValueError(f"analysis.primary {primary!r}: the threshold must be one of suite.thresholds "
                             f"({', '.join(f'{t:g}' for t in self.suite.thresholds)})")
        return {"kind": "cost_to_threshold", "cost": COSTS_TO[cost], "threshold": value}

    def catalog_file(self, base: Path, progress_factory=None) -> Path:
        """The suite's catalog file: its own path (relative to the suite file) or the cached synth file."""
        if self.data.synth is not None:
            from galbench.data.synth import cached_synth_catalog  # GalSim only where a suite simulates

            return cached_synth_catalog(self.data.synth.model_dump(), progress_factory)
        path = relative_path(self.data.catalog, base)
        if not path.exists():
            how = f"; create it with: {self.data.create_with}" if self.data.create_with else ""
            raise GalbenchError(f"catalog file not found{how}", where=str(path))
        return path

    def split_seeds(self) -> dict[int | None, int | list[int]]:
        """The seed of every split the runs use, by key: None for the one shared split, else each run seed.

        A per-seed split is drawn with [split seed, run seed], so it differs between seeds and not between arms.
        """
        cfg = self.data.split
        if not cfg.per_seed:
            return {None: cfg.seed}
        return {seed: [cfg.seed, seed] for seed in self.suite.seeds}

    def train_for(self, variant: Variant) -> TrainSection:
        """The [train] section with the variant's overrides applied (validated)."""
        return TrainSection.model_validate(merged_train(self.train.model_dump(), variant.train))

    def replicates_for(self, variant: Variant) -> int:
        """How many independent pretrainings a variant's runs start from (1 where the init is not one)."""
        kind, _, name = variant.init.partition(":")
        if kind == "fractal":
            return (variant.fractal or FractalSection()).replicates
        if kind == "pretrained":
            return next((p.replicates for p in self.pretrained if p.name == name), 1)
        return 1

    def train_size_list(self) -> list[int | str | None]:
        """The train sizes to run (`[None]`, meaning the whole training split, without `suite.train_sizes`)."""
        return list(self.suite.train_sizes) if self.suite.train_sizes else [None]

    @property
    def baseline(self) -> str:
        """The variant the others are compared against: `suite.baseline`, else the first scratch variant."""
        if self.suite.baseline:
            return self.suite.baseline
        return next((v.name for v in self.variant if v.init == "scratch"), self.variant[0].name)

    def identity(self) -> str:
        """A hash of everything that changes results, except the seed list (so adding seeds resumes).

        Keys newer than galbench 0.2.0 are left out while they hold the value that does what 0.2.0 did,
        so a suite's run directory keeps its name across the upgrade and its runs resume there.
        """
        resolved = self.model_dump()
        resolved["suite"].pop("seeds")
        resolved.pop("executor")  # where runs execute does not change what they compute
        resolved.pop("analysis")  # nor how their results are tested
        train = resolved["train"]
        if train["steps"] is None:  # 0.2.0 wrote its defaults out
            train["epochs"] = train["epochs"] or DEFAULT_EPOCHS
            if train["evals"] is None:
                train["evals_per_epoch"] = train["evals_per_epoch"] or DEFAULT_EVALS_PER_EPOCH
        # nor how often checkpoints are written
        for table in (train, *(variant["train"] for variant in resolved["variant"])):
            table.pop("checkpoint_every", None)
        # keys added since, at the values that do what 0.2.0 did
        ssl_defaults = {key: PretrainedSection.model_fields[key].default for key in SSL_KEYS}
        as_before = [(resolved["suite"], {"threshold_metric": "accuracy", "train_sizes": None, "per_class": False}),
                     (resolved["data"]["split"], {"per_seed": False}),
                     (train, {"steps": None, "evals": None, "class_weights": "none", "sampler": "shuffle"}),
                     *((table, {"replicates": 1, "method": "supervised", **ssl_defaults})
                       for table in resolved["pretrained"]),
                     *((v["fractal"], {"replicates": 1, "preset": "cpu", "recipe": "galbench"})
                       for v in resolved["variant"] if v["fractal"])]
        for table, values in as_before:
            for key, value in values.items():
                if table[key] == value:
                    del table[key]
        return content_hash(resolved)


def _nearest(key: str, choices) -> str:
    match = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.5)
    return f"did you mean {match[0]!r}?" if match else f"valid keys: {', '.join(choices)}"


def _model_at(path: tuple) -> type[BaseModel] | None:
    model: Any = Suite
    for part in path:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _describe(error: dict, raw: dict) -> GalbenchError:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in _named(loc, raw))
    if error["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        fields = list(parent.model_fields) if parent else []
        return GalbenchError(f"unknown key '{key}'", fix=_nearest(str(loc[-1]), fields))
    message = error["msg"].removeprefix("Value error, ")
    return GalbenchError(f"{message}" if not key else f"'{key}': {message}")


def _named(loc: tuple, raw: dict) -> tuple:
    """A key path with list indices of named tables replaced by their names (variant.scratch.model)."""
    if len(loc) > 1 and loc[0] in ("variant", "pretrained") and isinstance(loc[1], int):
        entries = raw.get(loc[0])
        if isinstance(entries, list) and loc[1] < len(entries) and isinstance(entries[loc[1]], dict):
            return (loc[0], entries[loc[1]].get("name", loc[1]), *loc[2:])
    return loc


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `--set a.b=VALUE` (VALUE in TOML syntax; bare words are strings)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise GalbenchError(f"bad --set {text!r}", fix="write --set section.key=value, e.g. train.epochs=3")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply --set overrides to the raw TOML dict; `variant.NAME.key` and `pretrained.NAME.key` target one
    entry."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        if path[0] in ("variant", "pretrained"):
            if len(path) < 3:
                raise GalbenchError(f"bad --set {text!r}", fix=f"write {path[0]}.NAME.key=value")
            matches = [v for v in raw.get(path[0], []) if v.get("name") == path[1]]
            if not matches:
                raise GalbenchError(f"--set {text!r}: no {path[0]} named {path[1]!r}")
            node, path = matches[0], path[2:]
        else:
            node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GalbenchError(f"--set {text!r}: {part!r} is not a table")
        if len(path) > 1 and path[-2] == "train":  # a budget or grid on the command line replaces the file's
            for keys in (BUDGET_KEYS, GRID_KEYS):
                if path[-1] in keys:
                    for key in keys:
                        node.pop(key, None)
        node[path[-1]] = value
    return raw


def packaged_suites() -> list[str]:
    """Names of the suites shipped with galbench (`galbench run NAME` works from any folder)."""
    return sorted(path.stem for path in PACKAGED_SUITES.glob("*.toml"))


def load_suite(path: str | Path, overrides: list[str] | None = None) -> tuple[Suite, Path]:
    """Read, override and validate a suite file (or a packaged suite by name); returns the suite and the
    folder its relative paths start from (the suite file's, or the current one for a packaged suite)."""
    path = Path(path)
    base = None
    if not path.exists() and len(path.parts) == 1 and not path.suffix and path.name in packaged_suites():
        path, base = PACKAGED_SUITES / f"{path.name}.toml", Path.cwd()
    if not path.exists():
        raise GalbenchError("suite file not found", where=str(path),
                            fix=f"give a suite TOML file or a packaged suite: {', '.join(packaged_suites())}")
    if path.is_dir():
        raise GalbenchError("is a folder, not a suite file", where=str(path),
                            fix="give the suite's TOML file, e.g. suites/quickstart.toml")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise GalbenchError(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
                            where=str(path), fix="save the suite file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise GalbenchError(f"malformed TOML: {exc}", where=str(path)) from None
    raw = apply_overrides(raw, overrides or [])
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        error = _describe(exc.errors()[0], raw)
        error.where = str(path)
        raise error from None
    for variant in suite.variant:
        try:
            suite.train_for(variant)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in ("train", *first["loc"]))
            if first["type"] == "extra_forbidden":
                raise GalbenchError(f"unknown key 'variant.{variant.name}.{loc}'", where=str(path),
                                    fix=_nearest(str(first["loc"][-1]), TrainSection.model_fields)) from None
            message = first["msg"].removeprefix("Value error, ")
            raise GalbenchError(f"'variant.{variant.name}.{loc}': {message}", where=str(path)) from None
    return suite, base or path.resolve().parent
