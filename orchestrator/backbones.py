"""``python -m orchestrator.backbones``: Table 4, stage 0 for each backbone × folds."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from clile_core.config import SEARCH_SPACES, ConfigError, read_yaml
from clile_core.models.backbones import BACKBONES
from clile_core.variants import get_variant
from orchestrator.cli import Context, run_command
from orchestrator.report import print_table
from orchestrator.units import Plan, add_variant_fold

BACKBONES_FILE = SEARCH_SPACES / "backbones.yaml"


@dataclass(frozen=True)
class BackboneList:
    names: list[str]
    default_folds: dict[str, list[int]]


def load_backbones(path: str | Path = BACKBONES_FILE) -> BackboneList:
    raw = read_yaml(path)
    allowed = {"backbones", "default_folds"}
    if not isinstance(raw, dict) or set(raw) - allowed or "backbones" not in raw:
        raise ConfigError(f"{path}: expected key 'backbones' (a list of names) and optionally 'default_folds'; allowed keys: {sorted(allowed)}")
    names = raw["backbones"]
    if not isinstance(names, list) or not names:
        raise ConfigError(f"{path}: 'backbones' must be a non-empty list of names")
    unknown = [n for n in names if n not in BACKBONES]
    if unknown:
        raise ConfigError(f"{path}: unknown backbone(s) {unknown}; registered: {sorted(BACKBONES)}")
    folds = raw.get("default_folds") or {}
    for dataset, chosen in folds.items():
        if not isinstance(chosen, list) or not chosen or not set(chosen) <= {1, 2, 3}:
            raise ConfigError(f"{path}: default_folds.{dataset} must be a non-empty list of folds from [1, 2, 3], got {chosen!r}")
    return BackboneList(names, folds)


def _extend(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(folds=None)  # resolved per dataset from the backbones file's default_folds
    parser.add_argument("--backbones-file", default=str(BACKBONES_FILE))
    parser.add_argument("--backbones", nargs="+", help="only these backbones (default: all in the file)")


def _names(ctx: Context) -> list[str]:
    return ctx.args.backbones or load_backbones(ctx.args.backbones_file).names


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
    return run_command("python -m orchestrator.backbones", __doc__, "clile-backbones", argv, build_plan, report, _extend)


if __name__ == "__main__":
    sys.exit(main())
