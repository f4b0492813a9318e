"""Ablation variants (Table 3) as a registry loaded from ``search_spaces/variants.yaml``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from search_spaces import ROOT as SEARCH_SPACES

from clile_core.config import CHECKED, Bool, ConfigError, Conflict, RunConfig, Str, load_file

VARIANTS_FILE = SEARCH_SPACES / "variants.yaml"


@dataclass(frozen=True, config=CHECKED)
class Variant:
    """One row of Table 3. A switch with a ``title`` is one of the table's columns (``switch_columns``), so a
    new switch (a new loss term, a new stage) shows up there by being declared here."""

    name: Str
    stage1: Annotated[Bool, Field(title="stage I")]  # train stage I (F_enc^ID + ILEs)
    id_loss: Annotated[Bool, Field(title="L_ID")]  # L_ID in stage I
    orth: Annotated[Bool, Field(title="L_Orth")]  # L_Orth in stage II
    contra: Annotated[Bool, Field(title="L_Contra")]  # L_Contra in stage II
    stage2: Bool = True  # False: stage 0 alone (A0); A0's own row says so, no column

    @model_validator(mode="after")
    def _trains_what_it_uses(self) -> Variant:
        needs_stage1 = [flag for flag in ("id_loss", "orth") if getattr(self, flag)]
        if needs_stage1 and not self.stage1:
            raise Conflict(" and ".join(f"{{{flag}}}" for flag in needs_stage1) + " need stage I's model, but {stage1}",
                           {flag: getattr(self, flag) for flag in (*needs_stage1, "stage1")}, "set stage1: true")
        if not self.stage2 and (self.stage1 or self.contra):
            raise Conflict("{stage2} means stage 0 alone, but {stage1} and {contra}",
                           {"stage2": self.stage2, "stage1": self.stage1, "contra": self.contra},
                           "set stage1 and contra to false")
        return self

    def apply(self, cfg: RunConfig) -> RunConfig:
        """The run config this variant trains with: its switches set, stage-I initialisation off without stage I."""
        stage1 = dataclasses.replace(cfg.stage1, use_id_loss=self.id_loss)
        stage2 = dataclasses.replace(cfg.stage2, use_orth=self.orth, use_contra=self.contra)
        if not self.stage1:
            stage2 = dataclasses.replace(stage2, init_from_stage1=False, au_init="random")
        return dataclasses.replace(cfg, stage1=stage1, stage2=stage2)


@dataclass(config=CHECKED)
class VariantTable:
    """The file: ``variants:`` mapping each row's name to its switches."""

    variants: Annotated[dict[Str, Variant], Field(min_length=1)]

    @field_validator("variants", mode="before")
    @classmethod
    def _named_by_key(cls, rows: Any) -> Any:
        # the YAML key is the variant's name; what is not a mapping is left for the validation to refuse
        if not isinstance(rows, dict):
            return rows
        named = [str(key) for key, switches in rows.items() if isinstance(switches, dict) and "name" in switches]
        if named:  # it would be silently replaced by the key
            raise ValueError(f"variant(s) {named} set name:, but a variant is named by its key; remove the name: key")
        return {key: {**switches, "name": str(key)} if isinstance(switches, dict) else switches
                for key, switches in rows.items()}


def switch_columns() -> dict[str, str]:
    """Table 3's switch columns, in declaration order: each titled ``Variant`` switch -> its heading."""
    return {name: info.title for name, info in Variant.__pydantic_fields__.items() if info.title}


def load_variants(path: str | Path = VARIANTS_FILE) -> dict[str, Variant]:
    return load_file(VariantTable, path).variants


def get_variant(name: str, path: str | Path = VARIANTS_FILE) -> Variant:
    variants = load_variants(path)
    if name not in variants:
        raise ConfigError(f"unknown variant {name!r}; {path} defines {list(variants)}")
    return variants[name]
