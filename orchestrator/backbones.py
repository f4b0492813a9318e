"""``python -m orchestrator.backbones``: Table 4, stage 0 for each backbone × folds."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from search_spaces import ROOT as SEARCH_SPACES

from clile_core.config import CHECKED, DatasetName, load_file
from clile_core.data.folds import FOLDS
from clile_core.models.backbones import BACKBONES
from clile_core.variants import get_variant
from orchestrator.cli import Context, run_command
from orchestrator.report import print_table
from orchestrator.units import Plan, add_variant_fold

BACKBONES_FILE = SEARCH_SPACES / "backbones.yaml"


# a name registered in clile_core.models.backbones, a fold of the 3-fold protocol
BackboneName = Literal[tuple(BACKBONES)]
Fold = Literal[FOLDS]


@dataclass(config=CHECKED)
class BackboneList:
    backbones: Annotated[list[BackboneName], Field(min_length=1)]
    default_folds: dict[DatasetName, Annotated[list[Fold], Field(min_length=1)]] = field(default_factory=dict)


def load_backbones(path: str | Path = BACKBONES_FILE) -> BackboneList:
    return load_file(BackboneList, path)


def _extend(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(folds=None)  # resolved per dataset from the backbones file's default_folds
    parser.add_argument("--backbones-file", default=str(BACKBONES_FILE))
    parser.add_argument("--backbones", nargs="+", help="only these backbones (default: all in the file)")


def _names(ctx: Context) -> list[str]:
    return ctx.args.backbones or load_backbones(ctx.args.backbones_file).backbones


def build_plan(ctx: Context) -> Plan:
    if ctx.args.folds is None:
        ctx.args.folds = load_backbones(ctx.args.backbones_file).default_folds.get(ctx.args.dataset, [1, 2, 3])
    plan = Plan("backbones")
    stage0_only = get_variant("A0")
    for name in _names(ctx):
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; registered: {sorted(BACKBONES)}")
        cfg = dataclasses.replace(ctx.cfg, model=dataclasses.replace(ctx.cfg.model, backbone=name))
        for fold in ctx.args.folds:
            for seed in ctx.seeds:
                add_variant_fold(plan, cfg, stage0_only, fold, ctx.manifest_hash, seed=seed, row=name)
    return plan


def report(ctx, plan, tracker, outcome) -> None:
    print_table(ctx, "Backbones (Table 4), stage 0", rows=_names(ctx), tracker=tracker, outcome=outcome)


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m orchestrator.backbones", __doc__, "clile-backbones", argv,
                       build_plan=build_plan, report=report, extend_parser=_extend)


if __name__ == "__main__":
    sys.exit(main())
