"""Stage units and the plan: a sweep is a DAG of units keyed by what determines their output.

A unit's key hashes its resolved config (only the parts its stage reads), its upstream keys and the
manifest's hash, so equal work gets one key: A2/A3 share stage I, every variant of a fold shares
stage 0, and `backbones` finds the resnet18 stage 0 that `ablate` trained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from clile_core.config import RunConfig, flatten, to_dict
from clile_core.stages import STAGES, final_stage, fold_stages, get_stage
from clile_core.variants import Variant

_PATH_KEYS = {"data.synthetic_root", "data.manifest", "data.images", "data.num_workers", "features.cache_dir", "device",
              "deterministic"}
_SHARED = ("features.random_crops", "features.dtype", "loss_weighting", "threshold", "seed")


def _stage_config(cfg: RunConfig, stage: str) -> dict[str, Any]:
    """The config values a stage's output depends on; paths and devices are excluded (they differ per machine)."""
    flat = {k: v for k, v in flatten(cfg).items() if k not in _PATH_KEYS}
    sections = get_stage(stage).key_sections
    return {k: v for k, v in flat.items() if k.startswith(sections) or k in _SHARED}


@dataclass
class Unit:
    stage: str
    fold: int
    config: dict[str, Any]  # the full resolved RunConfig (as a dict) the unit trains with
    upstream: dict[str, str]  # stage name -> key
    manifest_hash: str
    key: str = ""
    variants: list[str] = field(default_factory=list)  # variants that use this unit
    final_for: list[str] = field(default_factory=list)  # table rows whose cell this unit answers
    # stages this command trains on top of it; none: its feature cache would never be read, so it is not built
    downstream: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.key:
            payload = {"stage": self.stage, "fold": self.fold, "config": _stage_config(self.run_config(), self.stage),
                       "upstream": self.upstream, "manifest": self.manifest_hash}
            self.key = f"{self.stage}-{hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]}"

    def run_config(self) -> RunConfig:
        from clile_core.config import merge

        return merge(RunConfig(), self.config, f"unit {self.key or self.stage}")

    @property
    def backbone(self) -> str:
        return self.config["model"]["backbone"]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    def name(self) -> str:
        label = "+".join(self.variants) if self.variants else self.backbone
        return f"{label} · fold {self.fold} · seed {self.seed} · {self.backbone} · {get_stage(self.stage).label}"

    def mark_read_by(self, stage: str) -> None:
        if stage not in self.downstream:
            self.downstream.append(stage)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "fold": self.fold, "config": self.config, "upstream": self.upstream,
                "manifest_hash": self.manifest_hash, "key": self.key, "variants": self.variants, "final_for": self.final_for,
                "downstream": self.downstream}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> "Unit":
        return cls(**payload)


@dataclass
class Plan:
    """Units in dependency order, and which unit answers each (row, fold) cell of the command's table."""

    command: str
    units: dict[str, Unit] = field(default_factory=dict)
    cells: dict[tuple[str, int, int], str] = field(default_factory=dict)  # (row, fold, seed) -> unit key

    def add(self, unit: Unit, variant: str | None = None) -> Unit:
        existing = self.units.setdefault(unit.key, unit)
        if variant and variant not in existing.variants:
            existing.variants.append(variant)
        return existing

    def levels(self) -> list[list[Unit]]:
        return [[u for u in self.units.values() if u.stage == stage] for stage in STAGES]

    def ordered(self) -> list[Unit]:
        """Every unit, upstream stages first."""
        return [unit for level in self.levels() for unit in level]

    def mark_final(self, row: str, fold: int, unit: Unit) -> None:
        self.cells[(row, fold, unit.seed)] = unit.key
        if row not in unit.final_for:
            unit.final_for.append(row)


def add_variant_fold(plan: Plan, cfg: RunConfig, variant: Variant, fold: int, manifest_hash: str, *,
                     seed: int, row: str | None = None) -> Unit:
    """Add the units one (variant, fold, seed) needs and mark its final unit (stage 0 for A0, else stage II)
    as the answer to table cell (``row`` or the variant's name, fold, seed). The seed is part of every
    unit's key, so units are shared between variants per seed, never across seeds."""
    cfg = dataclasses.replace(variant.apply(cfg), seed=seed)
    as_dict = to_dict(cfg)
    added: dict[str, Unit] = {}
    for stage in fold_stages(variant):
        upstream = {name: added[name].key for name in stage.upstream_in(added)}
        added[stage.name] = plan.add(Unit(stage.name, fold, as_dict, upstream, manifest_hash), variant.name)
        for name in upstream:
            added[name].mark_read_by(stage.name)
    final = added[final_stage(variant).name]
    plan.mark_final(row or variant.name, fold, final)
    return final
