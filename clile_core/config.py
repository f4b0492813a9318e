"""Typed run configuration: pydantic dataclasses with the paper's defaults, loaded from YAML with strict checks.

Layers, later wins: dataclass defaults (the paper, BP4D) -> dataset preset -> --config FILE -> --set k=v.
Every allowed value lives on its field (``Literal`` choices, ``Field(ge=, le=)`` ranges) and every constraint
between fields in its dataclass (``model_validator``), so a configuration that constructs is one that trains;
``validate`` turns pydantic's report into one line naming the source, the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, TypeVar

import annotated_types
import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from clile_core.datasets import AU_SET_NAMES, DATASET_NAMES, get_dataset


T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key that is not allowed; the message names source, key and what is allowed."""


class Conflict(ValueError):
    """A cross-field check's refusal. ``{key}`` in ``template`` names a field of the refusing dataclass; the
    message renders it as ``section.key=value``, the section being wherever that dataclass sits in the file."""

    def __init__(self, template: str, values: dict[str, Any], hint: str = "") -> None:
        self.template, self.values, self.hint = template, values, hint
        super().__init__(self.render(""))

    def render(self, prefix: str) -> str:
        named = {key: f"{prefix}{key}={json.dumps(value)}" for key, value in self.values.items()}
        return self.template.format(**named) + (f" ({self.hint})" if self.hint else "")


def yaml_number(value: Any) -> Any:
    """YAML 1.1 reads 1e-3 (no dot) as a string: the float such a string spells, else ``value`` unchanged."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


# Scalars are taken as YAML typed them (no "3" -> 3, no 1 -> true, no 2.0 -> 2); an int is a valid float, and
# so is a string that spells one (see yaml_number). Sections and lists are built from YAML mappings.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), BeforeValidator(yaml_number)]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
CHECKED = ConfigDict(extra="forbid", allow_inf_nan=False)



def _registered(names: Sequence[str]) -> AfterValidator:
    """A name checked against the dataset registry when a config is validated, not when this module is
    imported: datasets registered later (a lab's own, outside the checkout) are allowed too."""

    def check(value: str) -> str:
        if value not in names:
            raise ValueError(f"{value!r} is not allowed; choose one of {list(names)}")
        return value

    return AfterValidator(check)


DatasetName = Annotated[Str, _registered(DATASET_NAMES)]
AuSetName = Annotated[Str, _registered(AU_SET_NAMES)]
Fraction = Annotated[Float, Field(ge=0.0, le=0.9)]
# the stage fields a subclass gives another default: declared once, so the subclass keeps the bounds
Epochs = Annotated[Int, Field(ge=1, le=100000)]
LearningRate = Annotated[Float, Field(ge=1e-9, le=10.0)]
Selection = Literal["val_f1", "last"]


@dataclass(config=CHECKED)
class DataConfig:
    dataset: DatasetName = "synthetic"
    manifest: Str | None = None  # real data: the manifest written by clile_core.data.prepare
    images: Str | None = None  # real data: the images root the manifest's paths are relative to
    au_set: AuSetName = "bp4d"
    input_size: Annotated[Int, Field(ge=16, le=1024)] = 224
    resize_size: Int | None = None  # None: input_size * 240 / 224, the paper's 240 -> 224 crop ratio
    val_fraction: Fraction = 0.15
    seen_fraction: Fraction = 0.1
    split_seed: Int = 0
    # DataLoader worker processes; 'auto': on CUDA the trial's CPU share minus the one that drives the GPU,
    # on CPU 0 (the trial's CPUs already run the model, workers would only compete for them)
    num_workers: Annotated[Int, Field(ge=0, le=64)] | Literal["auto"] = "auto"
    synthetic_root: Str = "data/synthetic"
    synthetic_subjects: Annotated[Int, Field(ge=3, le=10000)] = 18
    synthetic_frames: Annotated[Int, Field(ge=1, le=100000)] = 80
    synthetic_size: Annotated[Int, Field(ge=32, le=1024)] = 72
    synthetic_seed: Int = 0

    @property
    def resize(self) -> int:
        return self.resize_size or round(self.input_size * 240 / 224)

    @model_validator(mode="after")
    def _crop_fits(self) -> DataConfig:
        if self.resize < self.input_size:
            raise Conflict("{resize_size} is smaller than {input_size}",
                           {"resize_size": self.resize, "input_size": self.input_size},
                           "the crop is taken from the resized image; use resize_size >= input_size or null")
        return self


@dataclass(config=CHECKED)
class ModelConfig:
    backbone: Str = "resnet18"
    weights: Str = "imagenet"  # 'imagenet', 'none', or a path to a state dict
    dim: Annotated[Int, Field(ge=8, le=8192)] = 512
    layers: Annotated[Int, Field(ge=1, le=48)] = 2
    heads: Annotated[Int, Field(ge=1, le=64)] = 8
    ff_dim: Annotated[Int, Field(ge=8, le=65536)] = 2048
    dropout: Annotated[Float, Field(ge=0.0, le=0.9)] = 0.1
    pooling: Literal["mean", "cls"] = "mean"
    pos_embedding: Bool = True  # learned embedding per token position (PAPER.md: open in the paper)

    @model_validator(mode="after")
    def _heads_split_dim(self) -> ModelConfig:
        # checked here rather than by torch inside a Ray trial, after stage 0 has trained
        if self.dim % self.heads:
            fits = [h for h in range(1, min(self.dim, 64) + 1) if self.dim % h == 0]
            raise Conflict("{dim} is not divisible by {heads}", {"dim": self.dim, "heads": self.heads},
                           f"multi-head attention splits dim across heads; heads that fit: {fits}")
        return self


@dataclass(config=CHECKED)
class StageConfig:
    """Optimisation shared by every stage: SGD with a plateau schedule on validation F1 (paper §4.1)."""

    epochs: Epochs = 20
    lr: LearningRate = 1e-5
    momentum: Annotated[Float, Field(ge=0.0, le=0.999)] = 0.9
    weight_decay: Annotated[Float, Field(ge=0.0, le=1.0)] = 5e-4
    batch_size: Annotated[Int, Field(ge=1, le=65536)] = 64
    plateau_patience: Annotated[Int, Field(ge=0, le=1000)] = 2
    plateau_factor: Annotated[Float, Field(ge=0.001, le=1.0)] = 0.1
    grad_clip: Float | None = 5.0  # Eq. 4's log(|sim|+eps) has gradients up to 1/eps near 0
    # Which epoch's weights the stage keeps, and what the plateau schedule follows: 'val_f1' = the best
    # validation-F1 epoch (schedule on validation F1); 'last' = the last epoch (schedule on training loss).
    select: Selection = "val_f1"
    bf16: Bool = True  # bf16 autocast on CUDA (no effect on CPU); off trains in fp32
    compile: Bool = False  # torch.compile the model's submodules (first epoch pays the compilation)


@dataclass(config=CHECKED)
class Stage0Config(StageConfig):
    epochs: Epochs = 300
    lr: LearningRate = 1e-4


@dataclass(config=CHECKED)
class Stage1Config(StageConfig):
    use_id_loss: Bool = True
    lam: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.4  # Eq. 3: L1 = lam * L_BCE + (1 - lam) * L_ID
    # Stage I fits the training subjects' own ILEs: validation subjects have none, so a held-out-subject
    # score (the mean-ILE head's F1) should choose neither its checkpoint nor its learning-rate drops.
    select: Selection = "last"
    # L_ID is a log-ratio of sums over all N×C embeddings, so each ILE row receives O(1/(N·C)) of its
    # gradient; at the encoder's rate the table barely moves in 20 epochs. Its rate is this multiple.
    ile_lr_scale: Annotated[Float, Field(ge=1e-3, le=1e4)] = 20.0


@dataclass(config=CHECKED)
class Stage2Config(StageConfig):
    lambda1: Annotated[Float, Field(ge=0.0, le=100.0)] = 1.0
    lambda2: Annotated[Float, Field(ge=0.0, le=100.0)] = 0.5
    lambda3: Annotated[Float, Field(ge=0.0, le=100.0)] = 0.4
    tau: Annotated[Float, Field(ge=1e-3, le=100.0)] = 2.0
    orth_eps: Float = 1e-6
    use_orth: Bool = True
    use_contra: Bool = True
    init_from_stage1: Bool = True  # F_enc^G starts as a copy of F_enc^ID ("same structure and parameters")
    au_init: Literal["mean_ile", "random"] = "mean_ile"  # AU^G starts as the mean ILE over subjects, or random


@dataclass(config=CHECKED)
class FeatureConfig:
    random_crops: Annotated[Int, Field(ge=0, le=64)] = 0  # K extra fixed random-crop views per image besides centre and flip
    cache_dir: Str = "clile_store/features"
    dtype: Literal["float16", "float32"] = "float16"
    # stages I/II on CUDA: 'auto' keeps the fold's tokens on the GPU when they fit resident_memory of the
    # trial's GPU share, else streams them from the memory-mapped cache; 'always' forces residence (also on CPU)
    resident: Literal["auto", "always", "never"] = "auto"
    resident_memory: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.5


@dataclass(config=CHECKED)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stage0: Stage0Config = field(default_factory=Stage0Config)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    loss_weighting: Literal["selective", "inverse_frequency", "none"] = "selective"
    threshold: Annotated[Float, Field(ge=0.0, le=1.0)] = 0.5
    seed: Int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: Bool = False  # GPU: deterministic kernels only (slower); CPU runs repeat bit for bit anyway


# ---- YAML -> dataclasses, and pydantic's report -> one line ----------------------------------------------

Source = str | Callable[[str], str]  # one source for every key, or the source that set a given dotted key
_UNKNOWN_KEY = {"unexpected_keyword_argument", "extra_forbidden"}
_RANGE_ERRORS = {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def validate(cls: type[T], values: Any, source: Source) -> T:
    """``values`` (data from YAML) as a ``cls``; a refusal is one ConfigError naming source, key and what is allowed."""
    try:
        return _adapter(cls).validate_python(values)
    except ValidationError as exc:
        source_of = source if callable(source) else lambda _key: source
        raise ConfigError(_explain(cls, exc.errors(), source_of)) from None


def _options(tp: Any) -> list[tuple[Any, list]]:
    """A type's alternatives, each with its constraints: ``Annotated[int, Field(ge=0)] | Literal['auto']`` ->
    ``[(int, [Strict(), Ge(0)]), (Literal['auto'], [])]``."""
    if typing.get_origin(tp) is Annotated:
        base, *extra = typing.get_args(tp)
        meta = [m for item in extra for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
        return [(option, [*inner, *meta]) for option, inner in _options(base)]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return [option for arg in typing.get_args(tp) for option in _options(arg)]
    return [(tp, [])]


def _field_type(cls: type, name: str) -> Any:
    info = cls.__pydantic_fields__[name]
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _walk(root: type, loc: tuple) -> tuple[str, Any, Any]:
    """Follow an error's location through the types: (the dotted key it names, the type there, the container).
    What is left of ``loc`` after a scalar names a union member, which is not a key."""
    key, tp, container = "", root, None
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        options = _options(tp)
        base = options[0][0] if len(options) == 1 else None
        origin = typing.get_origin(base)
        if dataclasses.is_dataclass(base):
            container, tp = base, _field_type(base, part) if part in base.__pydantic_fields__ else None
        elif origin is dict:  # a mapping's key is named by (key, '[key]') when the key itself is refused
            refused_key = parts[:1] == ["[key]"]
            container, tp = base, typing.get_args(base)[0 if refused_key else 1]
            del parts[:refused_key]
        elif origin is list:
            container, tp = base, typing.get_args(base)[0]
            key += f"[{part}]"
            continue
        else:
            break
        key += f"{'.' if key else ''}{part}"
    return key, tp, container


def _expected(tp: Any) -> str:
    names = []
    for option, _meta in _options(tp):
        if typing.get_origin(option) is Literal:
            names += [repr(v) for v in typing.get_args(option)]
        elif option is bool:
            names.append("true or false")
        elif option is type(None):
            names.append("null")
        elif dataclasses.is_dataclass(option) or typing.get_origin(option) is dict:
            names.append("a mapping")
        elif typing.get_origin(option) is list:
            names.append("a list")
        else:
            names.append(getattr(option, "__name__", str(option)))
    return " or ".join(names)


def _bounds(tp: Any) -> str:
    """The range a field's constraints allow, as '[0, 64]' or '>= 1'."""
    low = high = ""
    for _option, constraints in _options(tp):
        for c in constraints:
            if isinstance(c, annotated_types.Ge):
                low = f"[{c.ge}"
            elif isinstance(c, annotated_types.Gt):
                low = f"({c.gt}"
            elif isinstance(c, annotated_types.Le):
                high = f"{c.le}]"
            elif isinstance(c, annotated_types.Lt):
                high = f"{c.lt})"
    if low and high:
        return f"{low}, {high}"
    return f">{'=' * low.startswith('[')} {low[1:]}" if low else f"<{'=' * high.endswith(']')} {high[:-1]}"


def _explain(root: type, errors: list[dict], source_of: Callable[[str], str]) -> str:
    """The first refused key, in one line. A union field (``int | 'auto'``) reports one error per member:
    the range when the number is out of it, the choices when a word is not among them, else both types."""
    # an unknown key first: a misspelt key also leaves the intended one missing
    first = next((e for e in errors if e["type"] in _UNKNOWN_KEY), errors[0])
    key, tp, container = _walk(root, first["loc"])
    group = {e["type"]: e for e in errors if _walk(root, e["loc"])[0] == key}
    value, source = first["input"], source_of(key)
    where = f"{source}: key '{key}'" if key else f"{source}: the top level"
    if first["type"] in _UNKNOWN_KEY:
        allowed = sorted(container.__pydantic_fields__)
        return f"{source}: unknown {'top-level ' if len(first['loc']) == 1 else ''}key '{key}'; allowed keys: {allowed}"
    if first["type"] in ("missing_argument", "missing"):
        return f"{source}: missing key '{key}' ({_expected(tp)})"
    if first["type"] == "value_error":
        error = first["ctx"]["error"]
        return f"{source}: {error.render(key + '.' if key else '')}" if isinstance(error, Conflict) else f"{where}: {error}"
    if group.keys() & _RANGE_ERRORS:
        return f"{where}: {value!r} is out of range; allowed {_bounds(tp)}"
    if "too_short" in group:
        return f"{where}: needs at least {group['too_short']['ctx']['min_length']} item(s), got {value!r}"
    if "literal_error" in group and (isinstance(value, str) or len(group) == 1):
        choices = [v for option, _ in _options(tp) if typing.get_origin(option) is Literal for v in typing.get_args(option)]
        return f"{where}: {value!r} is not allowed; choose one of {choices}"
    if "finite_number" in group:
        return f"{where}: expected a finite number, got {value!r}"
    if value is None:
        return f"{where}: null is not allowed here"
    return f"{where}: expected {_expected(tp)}, got {value!r}"


class _Layers:
    """YAML layers merged key by key (later wins), remembering which source set each dotted key."""

    def __init__(self, base: dict) -> None:
        self.values, self.origin, self.sources = base, {}, []

    def add(self, updates: Any, source: str) -> None:
        self.sources.append(source)
        self._overlay(self.values, updates, source, "")

    def _overlay(self, values: dict, updates: Any, source: str, prefix: str) -> None:
        if not isinstance(updates, dict):
            raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the top level'} must be a mapping of keys to values, "
                              f"got {updates!r}")
        for key, value in updates.items():
            if isinstance(values.get(key), dict):  # a section: merged key by key
                self._overlay(values[key], value, source, f"{prefix}{key}.")
            else:
                values[key] = value
                self.origin[f"{prefix}{key}"] = source

    def source_of(self, key: str) -> str:
        """The layer that set ``key``; for a section (a cross-field refusal), every layer that set a key in it."""
        if key in self.origin:
            return self.origin[key]
        inside = {source for k, source in self.origin.items() if not key or k.startswith(key + ".")}
        return " + ".join(s for s in self.sources if s in inside) or "defaults"


def merge(obj: T, updates: dict, source: str) -> T:
    """A copy of dataclass ``obj`` with ``updates`` applied, refusing unknown keys and bad values."""
    layers = _Layers(to_dict(obj))
    layers.add(updates, source)
    return validate(type(obj), layers.values, source)


def parse_overrides(pairs: list[str]) -> dict:
    """``["stage2.tau=1.5", "model.pooling=cls"]`` -> nested dict, values parsed as YAML scalars."""
    nested: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set stage2.tau=1.5")
        key, raw = pair.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return nested


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return loaded or {}


def load_file(cls: type[T], path: str | Path) -> T:
    """A YAML file (variants, search space, backbone list) as a ``cls``, refused with the file's name."""
    return validate(cls, read_yaml(path), str(path))


def preset_path(dataset: str) -> Path:
    return get_dataset(dataset).preset


def load_run_config(dataset: str, config_file: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults -> ``search_spaces/datasets/<dataset>.yaml`` -> ``config_file`` -> ``--set`` overrides, merged
    first and validated once, so a later layer may repair what an earlier one set (the final values count)."""
    if dataset not in DATASET_NAMES:
        raise ConfigError(f"--dataset {dataset!r} is unknown; choose one of {list(DATASET_NAMES)}")
    preset = preset_path(dataset)
    layers = _Layers(to_dict(RunConfig()))
    layers.add(read_yaml(preset), str(preset))
    if config_file:
        layers.add(read_yaml(config_file), str(config_file))
    if overrides:
        layers.add(parse_overrides(overrides), "--set")
    return validate(RunConfig, layers.values, layers.source_of)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"stage2.tau": 2.0, ...}``: every resolved value, the form MLflow params take."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(cfg).items() if dataclasses.is_dataclass(cfg) else cfg.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
