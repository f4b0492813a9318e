"""``python -m orchestrator.ablate``: Table 3, variants A0–A4 and CL-ILE × folds."""

from __future__ import annotations

import argparse
import sys

from clile_core.variants import VARIANTS_FILE, load_variants
from orchestrator.cli import Context, run_command
from orchestrator.report import print_table
from orchestrator.units import Plan, add_variant_fold


def _extend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants-file", default=str(VARIANTS_FILE), help="YAML of ablation variants")
    parser.add_argument("--variants", nargs="+", help="only these variants (default: all in the file)")


def _variants(ctx: Context):
    variants = load_variants(ctx.args.variants_file)
    chosen = ctx.args.variants or list(variants)
    unknown = [v for v in chosen if v not in variants]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; {ctx.args.variants_file} defines {list(variants)}")
    return [variants[v] for v in chosen]


def build_plan(ctx: Context) -> Plan:
    plan = Plan("ablate")
    for variant in _variants(ctx):
        for fold in ctx.args.folds:
            for seed in ctx.seeds:
                add_variant_fold(plan, ctx.cfg, variant, fold, ctx.manifest_hash, seed=seed)
    return plan


def report(ctx, plan, tracker, outcome) -> None:
    print_table(ctx, "Ablation (Table 3)", rows=[v.name for v in _variants(ctx)], tracker=tracker, outcome=outcome)


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m orchestrator.ablate", __doc__, "clile-ablation", argv,
                       build_plan=build_plan, report=report, extend_parser=_extend)


if __name__ == "__main__":
    sys.exit(main())
