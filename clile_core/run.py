"""``python -m clile_core.run``: one fold of one variant, stage 0 -> I -> II, then the per-AU F1 table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from clile_core.atomic import write_text
from clile_core.config import ConfigError, load_run_config, to_dict
from clile_core.data.manifest import ManifestError
from clile_core.datasets import DATASET_NAMES
from clile_core.log import get_logger
from clile_core.pipeline import run_fold
from clile_core.tables import f1_rows
from clile_core.variants import get_variant

log = get_logger("run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clile_core.run", description=__doc__)
    parser.add_argument("--dataset", default="synthetic", choices=DATASET_NAMES)
    parser.add_argument("--fold", type=int, default=1, choices=[1, 2, 3])
    parser.add_argument("--variant", default="CL-ILE", help="a variant of search_spaces/variants.yaml (A0-A4, CL-ILE)")
    parser.add_argument("--config", help="YAML file overriding the dataset preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one value, e.g. --set stage2.tau=1.5 (repeatable)")
    parser.add_argument("--out", help="run directory (default runs/<dataset>_fold<k>_<variant>_<time>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_run_config(args.dataset, args.config, args.overrides)
        variant = get_variant(args.variant)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    run_dir = Path(args.out or f"runs/{args.dataset}_fold{args.fold}_{args.variant}_{time.strftime('%Y%m%d-%H%M%S')}")
    write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(variant.apply(cfg)), sort_keys=False))
    log.info(f"{args.variant} · {args.dataset} fold {args.fold} · {cfg.model.backbone} -> {run_dir}")
    start = time.time()
    try:
        fold_run = run_fold(cfg, variant, args.fold, run_dir)
    except (ManifestError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    final = fold_run.final
    print(f"\n{args.variant} · {args.dataset} fold {args.fold} · test subjects {', '.join(fold_run.data.split.test_subjects)}")
    print(f"best epoch {int(final.metrics['best_epoch'])} on validation subjects {', '.join(fold_run.data.split.val_subjects)}\n")
    print(f1_rows(final.metrics, fold_run.data.au_names, {"test (unseen subjects)": "test", "seen subjects, held-out frames": "seen"}))
    print(f"\nmodel: {final.out_dir}  ({time.time() - start:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
