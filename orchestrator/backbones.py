"""``python -m orchestrator.backbones``: Table 4, stage 0 for each backbone × folds."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from clile_core.config import SEARCH_SPACES, ConfigError, read_yaml
from clile_core.models.backbones import BACKBONES
from clile_core.variants import get_variant
from orchestrator.cli import Context, run_command
from orchestrator.report import print_table
from orchestrator.units import Plan, add_variant_fold

BACKBONES_FILE = SEARCH_SPACES / "backbones.yaml"


def load_backbones(path: str | Path = BACKBONES_FILE) -> list[str]:
    raw = read_yaml(path)
    names = raw.get("backbones") if isinstance(raw, dict) else None
    if set(raw or {}) != {"backbones"} or not isinstance(names, list) or not names:
        raise ConfigError(f"{path}: expected one key 'backbones' holding a non-empty list of names")
    unknown = [n for n in names if n not in BACKBONES]
    if unknown:
        raise ConfigError(f"{path}: unknown backbone(s) {unknown}; registered: {sorted(BACKBONES)}")
    return names


def _extend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbones-file", default=str(BACKBONES_FILE))
    parser.add_argument("--backbones", nargs="+", help="only these backbones (default: all in the file)")


def _names(ctx: Context) -> list[str]:
    names = load_backbones(ctx.args.backbones_file)
    return ctx.args.backbones or names


def build_plan(ctx: Context) -> Plan:
    plan = Plan("backbones")
    stage0_only = get_variant("A0")
    for name in _names(ctx):
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; registered: {sorted(BACKBONES)}")
        cfg = dataclasses.replace(ctx.cfg, model=dataclasses.replace(ctx.cfg.model, backbone=name))
        for fold in ctx.args.folds:
            add_variant_fold(plan, cfg, stage0_only, fold, ctx.manifest_hash, row=name)
    return plan


def report(ctx, plan, tracker, outcome) -> None:
    print_table(ctx, "Backbones (Table 4), stage 0", _names(ctx), tracker, outcome)


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m orchestrator.backbones", __doc__, "clile-backbones", argv, build_plan, report, _extend)


if __name__ == "__main__":
    sys.exit(main())
