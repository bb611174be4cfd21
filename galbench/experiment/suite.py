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
from galbench.fileio import content_hash
from galbench.models.registry import list_models

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
    baseline: str | None = None

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
    seed: int = 0

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


class TrainSection(_Strict):
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(10, ge=1)
    evals_per_epoch: int = Field(1, ge=1, le=100)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    compile: bool = False
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
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


class FractalSection(_Strict):
    classes: int = Field(32, ge=2)
    per_class: int = Field(64, ge=1)
    size: int = Field(64, ge=32, le=512)
    seed: int = 0
    epochs: int = Field(8, ge=1)
    lr: float = Field(0.001, gt=0)  # AdamW
    batch_size: int = Field(128, ge=1)


class PretrainedSection(_Strict):
    """A named in-suite pretraining: supervised training on another catalog (file or synth)."""

    name: str
    catalog: str | None = None
    synth: SynthSection | None = None
    image_size: int | None = None
    epochs: int = Field(8, ge=1)
    lr: float = Field(0.001, gt=0)  # AdamW
    batch_size: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _one_source(self):
        return _exactly_one_source(self, "give exactly one of catalog or synth")


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
        # timm models are checked when built (timm may not be installed where the suite is written)
        if re.fullmatch(r"timm:[A-Za-z0-9_.-]+", value):
            return value
        names = [entry.name for entry in list_models()]
        if value not in names:
            near = difflib.get_close_matches(value, names, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]!r}?" if near else f"registered: {', '.join(names)}"
            raise ValueError(f"unknown model {value!r} ({hint} timm models are written timm:NAME)")
        return value

    @field_validator("init")
    @classmethod
    def _init(cls, value):
        kind = value.split(":", 1)[0]
        if kind not in ("scratch", "imagenet", "checkpoint", "fractal", "pretrained"):
            raise ValueError(f"unknown init {value!r}: use scratch, imagenet, imagenet:PATH, checkpoint:PATH, "
                             "fractal or pretrained:NAME")
        if kind in ("checkpoint", "pretrained") and ":" not in value:
            raise ValueError(f"init {kind} needs a value: {kind}:...")
        return value


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
        return self

    def train_for(self, variant: Variant) -> TrainSection:
        """The [train] section with the variant's overrides applied (validated)."""
        return TrainSection.model_validate({**self.train.model_dump(), **variant.train})

    @property
    def baseline(self) -> str:
        """The variant the others are compared against: `suite.baseline`, else the first scratch variant."""
        if self.suite.baseline:
            return self.suite.baseline
        return next((v.name for v in self.variant if v.init == "scratch"), self.variant[0].name)

    def identity(self) -> str:
        """A hash of everything that changes results, except the seed list (so adding seeds resumes)."""
        resolved = self.model_dump()
        resolved["suite"].pop("seeds")
        resolved.pop("executor")  # where runs execute does not change what they compute
        # nor how often checkpoints are written
        for train in (resolved["train"], *(variant["train"] for variant in resolved["variant"])):
            train.pop("checkpoint_every", None)
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
            loc = ".".join(str(p) for p in first["loc"])
            if first["type"] == "extra_forbidden":
                raise GalbenchError(f"unknown key 'variant.{variant.name}.train.{loc}'", where=str(path),
                                    fix=_nearest(loc, TrainSection.model_fields)) from None
            raise GalbenchError(f"'variant.{variant.name}.train.{loc}': {first['msg']}", where=str(path)) from None
    return suite, base or path.resolve().parent
