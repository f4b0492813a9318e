"""Typed run configuration: dataclasses with the paper's defaults, loaded from YAML with strict checks.

Layers, later wins: dataclass defaults (the paper, BP4D) -> dataset preset -> --config FILE -> --set k=v.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clile_core.datasets import AU_SET_NAMES, DATASET_NAMES, get_dataset

# Presets, variants and search spaces are package data of the top-level `search_spaces` package: found the
# same way in a checkout, an editable install and a wheel.
SEARCH_SPACES = Path(str(importlib.resources.files("search_spaces")))


class ConfigError(ValueError):
    """A configuration value or key that is not allowed; the message names source, key and what is allowed."""


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    manifest: str | None = None  # real data: the manifest written by clile_core.data.prepare
    images: str | None = None  # real data: the images root the manifest's paths are relative to
    au_set: str = "bp4d"
    input_size: int = 224
    resize_size: int | None = None  # None: input_size * 240 / 224, the paper's 240 -> 224 crop ratio
    val_fraction: float = 0.15
    seen_fraction: float = 0.1
    split_seed: int = 0
    # DataLoader worker processes; 'auto': on CUDA the trial's CPU share minus the one that drives the GPU,
    # on CPU 0 (the trial's CPUs already run the model, workers would only compete for them)
    num_workers: int | str = "auto"
    synthetic_root: str = "data/synthetic"
    synthetic_subjects: int = 18
    synthetic_frames: int = 80
    synthetic_size: int = 72
    synthetic_seed: int = 0

    _choices = {"dataset": DATASET_NAMES, "au_set": AU_SET_NAMES, "num_workers": ("auto",)}  # registry: clile_core.datasets
    _ranges = {"input_size": (16, 1024), "val_fraction": (0.0, 0.9), "seen_fraction": (0.0, 0.9),
               "num_workers": (0, 64), "synthetic_subjects": (3, 10000), "synthetic_frames": (1, 100000),
               "synthetic_size": (32, 1024)}

    @property
    def resize(self) -> int:
        return self.resize_size or round(self.input_size * 240 / 224)


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    weights: str = "imagenet"  # 'imagenet', 'none', or a path to a state dict
    dim: int = 512
    layers: int = 2
    heads: int = 8
    ff_dim: int = 2048
    dropout: float = 0.1
    pooling: str = "mean"
    pos_embedding: bool = True  # learned embedding per token position (PAPER.md: open in the paper)

    _choices = {"pooling": ("mean", "cls")}
    _ranges = {"dim": (8, 8192), "layers": (1, 48), "heads": (1, 64), "ff_dim": (8, 65536), "dropout": (0.0, 0.9)}


@dataclass
class StageConfig:
    """Optimisation shared by every stage: SGD with a plateau schedule on validation F1 (paper §4.1)."""

    epochs: int = 20
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    plateau_patience: int = 2
    plateau_factor: float = 0.1
    grad_clip: float | None = 5.0  # Eq. 4's log(|sim|+eps) has gradients up to 1/eps near 0
    # Which epoch's weights the stage keeps, and what the plateau schedule follows: 'val_f1' = the best
    # validation-F1 epoch (schedule on validation F1); 'last' = the last epoch (schedule on training loss).
    select: str = "val_f1"
    bf16: bool = True  # bf16 autocast on CUDA (no effect on CPU); off trains in fp32
    compile: bool = False  # torch.compile the model's submodules (first epoch pays the compilation)

    _choices = {"select": ("val_f1", "last")}
    _ranges = {"epochs": (1, 100000), "lr": (1e-9, 10.0), "momentum": (0.0, 0.999), "weight_decay": (0.0, 1.0),
               "batch_size": (1, 65536), "plateau_patience": (0, 1000), "plateau_factor": (0.001, 1.0)}


@dataclass
class Stage0Config(StageConfig):
    epochs: int = 300
    lr: float = 1e-4


@dataclass
class Stage1Config(StageConfig):
    use_id_loss: bool = True
    lam: float = 0.4  # Eq. 3: L1 = lam * L_BCE + (1 - lam) * L_ID
    # Stage I fits the training subjects' own ILEs: validation subjects have none, so a held-out-subject
    # score (the mean-ILE head's F1) should choose neither its checkpoint nor its learning-rate drops.
    select: str = "last"
    # L_ID is a log-ratio of sums over all N×C embeddings, so each ILE row receives O(1/(N·C)) of its
    # gradient; at the encoder's rate the table barely moves in 20 epochs. Its rate is this multiple.
    ile_lr_scale: float = 20.0

    _ranges = {**StageConfig._ranges, "lam": (0.0, 1.0), "ile_lr_scale": (1e-3, 1e4)}


@dataclass
class Stage2Config(StageConfig):
    lambda1: float = 1.0
    lambda2: float = 0.5
    lambda3: float = 0.4
    tau: float = 2.0
    orth_eps: float = 1e-6
    use_orth: bool = True
    use_contra: bool = True
    init_from_stage1: bool = True  # F_enc^G starts as a copy of F_enc^ID ("same structure and parameters")
    au_init: str = "mean_ile"  # AU^G starts as the mean ILE over subjects, or 'random'

    _choices = {**StageConfig._choices, "au_init": ("mean_ile", "random")}
    _ranges = {**StageConfig._ranges, "lambda1": (0.0, 100.0), "lambda2": (0.0, 100.0), "lambda3": (0.0, 100.0),
               "tau": (1e-3, 100.0)}


@dataclass
class FeatureConfig:
    random_crops: int = 0  # K extra fixed random-crop views cached per image besides centre and flip
    cache_dir: str = "clile_store/features"
    dtype: str = "float16"
    # stages I/II on CUDA: 'auto' keeps the fold's tokens on the GPU when they fit resident_memory of the
    # trial's GPU share, else streams them from the memory-mapped cache; 'always' forces residence (also on CPU)
    resident: str = "auto"
    resident_memory: float = 0.5

    _choices = {"dtype": ("float16", "float32"), "resident": ("auto", "always", "never")}
    _ranges = {"random_crops": (0, 64), "resident_memory": (0.0, 1.0)}


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stage0: Stage0Config = field(default_factory=Stage0Config)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    loss_weighting: str = "selective"
    threshold: float = 0.5
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False  # GPU: deterministic kernels only (slower); CPU runs repeat bit for bit anyway

    _choices = {"loss_weighting": ("selective", "inverse_frequency", "none"), "device": ("auto", "cpu", "cuda")}
    _ranges = {"threshold": (0.0, 1.0)}


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _check_value(cls: type, key: str, value: Any, where: str) -> None:
    choices = getattr(cls, "_choices", {}).get(key)
    # a field typed ``int | str`` (data.num_workers) takes a word from _choices or a number in _ranges
    if choices is not None and isinstance(value, str) and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {list(choices)}")
    bounds = getattr(cls, "_ranges", {}).get(key)
    if bounds is not None and isinstance(value, (int, float)) and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{where}: {value!r} is out of range; allowed [{bounds[0]}, {bounds[1]}]")


def yaml_number(value: Any) -> Any:
    """YAML 1.1 reads 1e-3 (no dot) as a string: the float such a string spells, else ``value`` unchanged."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check a YAML scalar against a field's annotation; ints are accepted where floats are expected."""
    options = typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union else (tp,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where}: null is not allowed here")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is float and str not in options and isinstance(yaml_number(value), float):
            return yaml_number(value)
        if option is str and isinstance(value, str):
            return value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options if o is not type(None))
    raise ConfigError(f"{where}: expected {names}, got {value!r}")


def merge(obj: Any, updates: dict, source: str, prefix: str = "") -> Any:
    """Return a copy of dataclass ``obj`` with ``updates`` applied, refusing unknown keys and bad values."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'} must be a mapping, got {updates!r}")
    fields = _fields(type(obj))
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, value in updates.items():
        where = f"{source}: key '{prefix}{key}'"
        if key not in fields:
            raise ConfigError(f"{where} is unknown; allowed keys: {sorted(fields)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = merge(current, value, source, f"{prefix}{key}.")
        else:
            coerced = _coerce(hints[key], value, where)
            _check_value(type(obj), key, coerced, where)
            changes[key] = coerced
    return dataclasses.replace(obj, **changes)


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


def preset_path(dataset: str) -> Path:
    return get_dataset(dataset).preset


def load_run_config(dataset: str, config_file: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults -> ``search_spaces/datasets/<dataset>.yaml`` -> ``config_file`` -> ``--set`` overrides."""
    if dataset not in DataConfig._choices["dataset"]:
        raise ConfigError(f"--dataset {dataset!r} is unknown; choose one of {list(DataConfig._choices['dataset'])}")
    preset = preset_path(dataset)
    cfg = merge(RunConfig(), read_yaml(preset), str(preset))
    if config_file:
        cfg = merge(cfg, read_yaml(config_file), str(config_file))
    if overrides:
        cfg = merge(cfg, parse_overrides(overrides), "--set")
    check_consistency(cfg, f"{preset}{' + ' + str(config_file) if config_file else ''}{' + --set' if overrides else ''}")
    return cfg


def check_consistency(cfg: RunConfig, source: str) -> None:
    """Constraints between fields, which single-field ranges cannot express; checked before anything trains."""
    model, data = cfg.model, cfg.data
    if model.dim % model.heads:
        divisors = [h for h in range(1, min(model.dim, 64) + 1) if model.dim % h == 0]
        raise ConfigError(f"{source}: model.dim={model.dim} is not divisible by model.heads={model.heads} "
                          f"(multi-head attention splits dim across heads); heads that fit: {divisors}")
    if data.resize < data.input_size:
        raise ConfigError(f"{source}: data.resize_size={data.resize} is smaller than data.input_size={data.input_size} "
                          f"(the crop is taken from the resized image); use resize_size >= input_size or null")


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
