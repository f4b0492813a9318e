"""The λ/τ search space: YAML -> typed config, refusing unknown keys and impossible ranges."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clile_core.config import SEARCH_SPACES, ConfigError, RunConfig, merge, read_yaml, yaml_number

SEARCH_FILE = SEARCH_SPACES / "search.yaml"
LR_SCALE = "lr_scale"
_TUNABLE = {f"stage1.{f}" for f in ("lam", "lr")} | {f"stage2.{f}" for f in ("lambda1", "lambda2", "lambda3", "tau", "lr")}


@dataclass(frozen=True)
class ParamSpec:
    type: str
    low: float
    high: float


@dataclass
class SearchSpace:
    num_samples: int = 8
    seed: int = 0
    grace_period: int = 1
    reduction_factor: int = 2
    space: dict[str, ParamSpec] = field(default_factory=dict)

    def tune_space(self) -> dict[str, Any]:
        from ray import tune

        samplers = {"uniform": tune.uniform, "loguniform": tune.loguniform}
        return {key: samplers[spec.type](spec.low, spec.high) for key, spec in self.space.items()}


def load_search_space(path: str | Path = SEARCH_FILE) -> SearchSpace:
    raw = read_yaml(path)
    allowed_top = {"num_samples", "seed", "asha", "space"}
    unknown = set(raw) - allowed_top
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed keys: {sorted(allowed_top)}")
    asha = raw.get("asha") or {}
    if set(asha) - {"grace_period", "reduction_factor"}:
        raise ConfigError(f"{path}: asha takes grace_period and reduction_factor, got {sorted(asha)}")
    space = {}
    for key, spec in (raw.get("space") or {}).items():
        where = f"{path}: space key '{key}'"
        if key not in _TUNABLE | {LR_SCALE}:
            raise ConfigError(f"{where} is not tunable; allowed keys: {sorted(_TUNABLE | {LR_SCALE})}")
        if not isinstance(spec, dict) or set(spec) != {"type", "low", "high"}:
            raise ConfigError(f"{where} needs exactly type, low, high")
        if spec["type"] not in ("uniform", "loguniform"):
            raise ConfigError(f"{where}: type {spec['type']!r} is not allowed; choose uniform or loguniform")
        low, high = (yaml_number(spec[k]) for k in ("low", "high"))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise ConfigError(f"{where}: needs numbers low < high, got low={low!r} high={high!r}")
        if spec["type"] == "loguniform" and low <= 0:
            raise ConfigError(f"{where}: loguniform needs low > 0, got {low!r}")
        space[key] = ParamSpec(spec["type"], float(low), float(high))
    if not space:
        raise ConfigError(f"{path}: 'space' is empty; nothing to search")
    result = SearchSpace(int(raw.get("num_samples", 8)), int(raw.get("seed", 0)), int(asha.get("grace_period", 1)),
                         int(asha.get("reduction_factor", 2)), space)
    if result.num_samples < 1 or result.grace_period < 1 or result.reduction_factor < 2:
        raise ConfigError(f"{path}: num_samples >= 1, asha.grace_period >= 1 and asha.reduction_factor >= 2 are required")
    return result


def apply_sample(cfg: RunConfig, sample: dict[str, Any]) -> RunConfig:
    """A sampled point as a RunConfig: config keys set directly, lr_scale multiplying both stage rates."""
    updates: dict[str, dict[str, Any]] = {}
    for key, value in sample.items():
        if key == LR_SCALE:
            updates.setdefault("stage1", {})["lr"] = cfg.stage1.lr * value
            updates.setdefault("stage2", {})["lr"] = cfg.stage2.lr * value
        elif key in _TUNABLE:
            section, name = key.split(".")
            updates.setdefault(section, {})[name] = value
    return merge(cfg, updates, "search sample")


def describe_sample(sample: dict[str, Any]) -> str:
    return " ".join(f"{k.split('.')[-1]}={v:.3g}" for k, v in sorted(sample.items()) if k in _TUNABLE | {LR_SCALE})


