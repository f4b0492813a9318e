"""Ablation variants (Table 3) as a registry loaded from ``search_spaces/variants.yaml``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from clile_core.config import SEARCH_SPACES, ConfigError, RunConfig, read_yaml

VARIANTS_FILE = SEARCH_SPACES / "variants.yaml"


@dataclass(frozen=True)
class Variant:
    name: str
    stage1: bool  # train stage I (F_enc^ID + ILEs)
    id_loss: bool  # L_ID in stage I
    orth: bool  # L_Orth in stage II
    contra: bool  # L_Contra in stage II
    stage2: bool = True  # False: stage 0 alone (A0)

    def __post_init__(self) -> None:
        needs_stage1 = [flag for flag in ("id_loss", "orth") if getattr(self, flag)]
        if needs_stage1 and not self.stage1:
            raise ConfigError(f"variant {self.name}: {needs_stage1} need stage1: true (they use stage I's model)")
        if not self.stage2 and (self.stage1 or self.contra):
            raise ConfigError(f"variant {self.name}: stage2: false means stage 0 alone; stage1/contra must be false")

    def apply(self, cfg: RunConfig) -> RunConfig:
        """The run config this variant trains with: its switches set, stage-I initialisation off without stage I."""
        stage1 = dataclasses.replace(cfg.stage1, use_id_loss=self.id_loss)
        stage2 = dataclasses.replace(cfg.stage2, use_orth=self.orth, use_contra=self.contra)
        if not self.stage1:
            stage2 = dataclasses.replace(stage2, init_from_stage1=False, au_init="random")
        return dataclasses.replace(cfg, stage1=stage1, stage2=stage2)


def load_variants(path: str | Path = VARIANTS_FILE) -> dict[str, Variant]:
    raw = read_yaml(path)
    if set(raw) != {"variants"} or not isinstance(raw["variants"], dict):
        raise ConfigError(f"{path}: expected one top-level key 'variants' mapping names to switches")
    allowed = {f.name for f in dataclasses.fields(Variant)} - {"name"}
    variants = {}
    for name, switches in raw["variants"].items():
        if not isinstance(switches, dict):
            raise ConfigError(f"{path}: variant {name} must map switches {sorted(allowed)} to true/false")
        unknown = set(switches) - allowed
        if unknown:
            raise ConfigError(f"{path}: variant {name}: unknown key(s) {sorted(unknown)}; allowed keys: {sorted(allowed)}")
        for key, value in switches.items():
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: variant {name}: key '{key}' must be true or false, got {value!r}")
        missing = {"stage1", "id_loss", "orth", "contra"} - set(switches)
        if missing:
            raise ConfigError(f"{path}: variant {name}: missing key(s) {sorted(missing)}")
        try:
            variants[str(name)] = Variant(name=str(name), **switches)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    return variants


def get_variant(name: str, path: str | Path = VARIANTS_FILE) -> Variant:
    variants = load_variants(path)
    if name not in variants:
        raise ConfigError(f"unknown variant {name!r}; {path} defines {list(variants)}")
    return variants[name]
