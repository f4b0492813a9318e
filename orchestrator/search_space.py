"""The λ/τ search space: YAML -> typed config, refusing unknown keys and impossible ranges."""

from __future__ import annotations

import typing
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from search_spaces import ROOT as SEARCH_SPACES

from clile_core.config import CHECKED, Conflict, Float, Int, RunConfig, load_file, merge

SEARCH_FILE = SEARCH_SPACES / "search.yaml"
LR_SCALE = "lr_scale"
# config keys a sample sets directly, and lr_scale, which multiplies both stage rates
SpaceKey = Literal["stage1.lam", "stage1.lr", "stage2.lambda1", "stage2.lambda2", "stage2.lambda3", "stage2.tau",
                   "stage2.lr", "lr_scale"]
_TUNABLE = set(typing.get_args(SpaceKey)) - {LR_SCALE}


@dataclass(frozen=True, config=CHECKED)
class ParamSpec:
    type: Literal["uniform", "loguniform"]
    low: Float
    high: Float

    @model_validator(mode="after")
    def _samplable(self) -> ParamSpec:
        if not self.low < self.high:
            raise Conflict("needs low < high, got {low} and {high}", {"low": self.low, "high": self.high})
        if self.type == "loguniform" and self.low <= 0:
            raise Conflict("loguniform needs low > 0, got {low}", {"low": self.low})
        return self


@dataclass(config=CHECKED)
class Asha:
    grace_period: Annotated[Int, Field(ge=1)] = 1
    reduction_factor: Annotated[Int, Field(ge=2)] = 2


@dataclass(config=CHECKED)
class SearchSpace:
    space: Annotated[dict[SpaceKey, ParamSpec], Field(min_length=1)]
    num_samples: Annotated[Int, Field(ge=1)] = 8
    seed: Int = 0
    asha: Asha = field(default_factory=Asha)

    @property
    def grace_period(self) -> int:
        return self.asha.grace_period

    @property
    def reduction_factor(self) -> int:
        return self.asha.reduction_factor

    def tune_space(self) -> dict[str, Any]:
        from ray import tune

        samplers = {"uniform": tune.uniform, "loguniform": tune.loguniform}
        return {key: samplers[spec.type](spec.low, spec.high) for key, spec in self.space.items()}


def load_search_space(path: str | Path = SEARCH_FILE) -> SearchSpace:
    return load_file(SearchSpace, path)


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
