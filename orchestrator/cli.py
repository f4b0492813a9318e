"""Flags and the driver flow shared by ``ablate``, ``backbones`` and ``search``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

from clile_core.config import ConfigError, RunConfig, load_run_config
from clile_core.data.fold_data import data_hash, resolve_manifest
from clile_core.data.folds import FOLDS
from clile_core.data.manifest import ManifestError, au_columns, read_manifest
from clile_core.datasets import DATASET_NAMES
from clile_core.log import get_logger
from clile_core.names import default_tracking_uri
from orchestrator.preflight import at_least, check_address, check_splits, check_tracking
from orchestrator.store import ArtifactStore
from orchestrator.sweep import SweepOptions, SweepOutcome, describe, execute, start_ray, sweep_key
from orchestrator.tracking import SweepTracker
from orchestrator.units import Plan


def common_parser(prog: str, description: str, default_experiment: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--dataset", default="synthetic", choices=DATASET_NAMES)
    parser.add_argument("--manifest", help="real data: manifest from `python -m clile_core.data.prepare`")
    parser.add_argument("--images", help="real data: images root the manifest's paths are relative to")
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="repeat every unit with these seeds, e.g. --seeds 0 1 2 (default: the config's seed)")
    parser.add_argument("--config", help="YAML overriding the dataset preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--experiment", default=default_experiment, help="MLflow experiment name")
    parser.add_argument("--tracking-uri", default=None, help="MLflow URI (default: sqlite:///<cwd>/mlflow.db)")
    parser.add_argument("--store", default="clile_store",
                        help="artifact store: a directory (shared by all nodes) or object storage, s3://bucket/prefix")
    parser.add_argument("--address", default=None, help="Ray cluster address (auto or HOST:PORT); default: local")
    parser.add_argument("--max-concurrent", type=at_least(1), default=None, help="trials at once (default: one per CPU)")
    parser.add_argument("--gpus-per-trial", type=at_least(0.0, float), default=0.25, help="GPU fraction for stage I/II trials")
    parser.add_argument("--cpus-per-gpu-trial", type=at_least(1), default=None,
                        help="CPUs of a trial on a GPU, its data-loading workers among them (default: the "
                             "node's CPUs shared evenly among the trials its GPUs hold)")
    parser.add_argument("--retries", type=at_least(0), default=1, help="retries of a failing unit before it is reported failed")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (units, cached or not) and exit")
    parser.add_argument("--register", metavar="NAME", help="register the best row's model in the Model Registry as NAME")
    return parser


@dataclass
class Context:
    args: argparse.Namespace
    cfg: RunConfig
    store: ArtifactStore
    manifest_hash: str
    au_names: list[str]
    tracking_uri: str

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(self.args.seeds)) if self.args.seeds else [self.cfg.seed]

    @property
    def runs_per_row(self) -> int:
        """Table cells a row should have: one per (fold, seed)."""
        return len(self.args.folds) * len(self.seeds)


def prepare(args: argparse.Namespace) -> Context:
    """Resolve config and data in the driver: absolute paths (trials may run elsewhere), the synthetic
    set generated once here rather than by concurrent trials, the manifest hashed for unit keys."""
    overrides = list(args.overrides)
    if args.manifest:
        overrides.append(f"data.manifest={Path(args.manifest).resolve()}")
    if args.images:
        overrides.append(f"data.images={Path(args.images).resolve()}")
    cfg = load_run_config(args.dataset, args.config, overrides)
    store = ArtifactStore(args.store)
    store.check_writable()
    data = dataclasses.replace(cfg.data, synthetic_root=str(Path(cfg.data.synthetic_root).resolve()))
    cfg = dataclasses.replace(cfg, data=data,
                              features=dataclasses.replace(cfg.features, cache_dir=str(store.features_dir)))
    manifest_path, images_root = resolve_manifest(cfg.data)
    manifest = read_manifest(manifest_path)
    check_splits(manifest, cfg.data, args.folds or list(FOLDS))  # None: a command picks its folds later
    tracking_uri = args.tracking_uri or default_tracking_uri()
    if not args.dry_run:
        check_tracking(tracking_uri)
        if args.address:
            check_address(args.address)
    return Context(args, cfg, store, data_hash(manifest, images_root, cfg.features.cache_dir), au_columns(manifest),
                   tracking_uri)


def run_command(
    prog: str, description: str, default_experiment: str, argv: list[str] | None, *,
    build_plan: Callable[[Context], Plan], report: Callable[[Context, Plan, SweepTracker, SweepOutcome], None],
    extend_parser: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    parser = common_parser(prog, description, default_experiment)
    if extend_parser:
        extend_parser(parser)
    args = parser.parse_args(argv)
    try:
        ctx = prepare(args)
        plan = build_plan(ctx)
    except (ConfigError, ManifestError, FileNotFoundError, ValueError) as exc:
        get_logger(prog.rsplit(".", 1)[-1]).error("%s", exc)
        return 2
    log = get_logger(plan.command)
    log.info(f"store {ctx.store.location} · MLflow {ctx.tracking_uri} · experiment '{args.experiment}'")
    if args.dry_run:
        print(describe(plan, ctx.store))
        return 0
    options = SweepOptions(args.dataset, args.address, args.max_concurrent, args.gpus_per_trial, args.retries,
                           cpus_per_gpu_trial=args.cpus_per_gpu_trial)
    start_ray(plan, ctx.store, options)  # first: Ray's workers import the unit's stack while MLflow is set up
    # Under a lock: a fresh SQLite DB is migrated once, and two sweeps never both take over one orphan parent.
    with tracking_lock(ctx.tracking_uri):
        tracker = SweepTracker(ctx.tracking_uri, experiment=args.experiment, command=plan.command, dataset=args.dataset,
                               sweep_key=sweep_key(plan), params={
                                   "command": plan.command, "dataset": args.dataset, "folds": " ".join(map(str, args.folds)),
                                   "seeds": " ".join(map(str, ctx.seeds)),
                                   "overrides": " ".join(args.overrides) or "-", "units": len(plan.units)})
    tracker.log_dataset(args.dataset, resolve_manifest(ctx.cfg.data)[0], ctx.manifest_hash)
    if tracker.resumed:
        log.info(f"resuming unfinished parent run {tracker.parent_id}")
    # Ray Tune would catch Ctrl-C and end the sweep "normally" (parent FINISHED, units FAILED): let it
    # interrupt the driver instead, so the runs end KILLED and a rerun resumes them.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    error: BaseException | None = None
    try:
        outcome = execute(plan, ctx.store, tracker, options)
        report(ctx, plan, tracker, outcome)
    except BaseException as exc:  # KeyboardInterrupt included: the runs must not stay RUNNING
        error = exc
        if not isinstance(exc, KeyboardInterrupt):
            raise
    finally:
        tracker.close(SweepTracker.status_for(error))
    if isinstance(error, KeyboardInterrupt):
        log.warning(f"interrupted: parent run {tracker.parent_id} KILLED; rerun the same command to resume")
        return 130
    return 0 if not outcome.failed and not outcome.skipped else 1


def tracking_lock(uri: str) -> FileLock | contextlib.nullcontext:
    """A lock file beside an SQLite tracking DB; a tracking server serialises its own writes."""
    if uri.startswith("sqlite:///"):
        return FileLock(uri.removeprefix("sqlite:///") + ".lock")
    return contextlib.nullcontext()
