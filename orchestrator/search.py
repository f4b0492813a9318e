"""``python -m orchestrator.search``: Optuna TPE (Ray Tune's OptunaSearch) over λ, λ1, λ2, λ3, τ and the
stage learning rate, maximising mean validation F1 over folds with ASHA stopping weak trials; the best
point is then evaluated once on the test folds beside the paper's defaults."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from clile_core.config import RunConfig, merge, to_dict
from clile_core.variants import get_variant
from orchestrator.cli import Context, run_command
from orchestrator.execute import claim_trial_share, run_unit
from orchestrator.report import print_table
from orchestrator.resources import init_ray, plan_resources
from orchestrator.search_space import SEARCH_FILE, apply_sample, describe_sample, load_search_space
from orchestrator.store import ArtifactStore
from orchestrator.sweep import SweepOptions, execute
from orchestrator.tracking import SweepTracker
from orchestrator.units import Plan, add_variant_fold

METRIC = "val_f1_avg"  # mean over folds of the best-epoch validation F1: test subjects never enter it
PAPER_ROW, BEST_ROW = "paper defaults", "search best"


def _fold_units(cfg: RunConfig, fold: int, manifest_hash: str, row: str = "CL-ILE") -> Plan:
    plan = Plan("search")
    add_variant_fold(plan, cfg, get_variant("CL-ILE"), fold, manifest_hash, row=row)
    return plan


def search_trainable(config: dict[str, Any]) -> None:
    """One sampled point: stage I + II of CL-ILE per fold (units stored, so reusable), reporting the
    running mean validation F1 after each fold — the resource ASHA allocates."""
    claim_trial_share(int(config["threads"]))
    store = ArtifactStore(config["store"])
    cfg = apply_sample(merge(RunConfig(), json.loads(config["base"]), "search base"), config)
    scores, keys = [], []
    for done, fold in enumerate(json.loads(config["folds"]), start=1):
        plan = _fold_units(cfg, fold, config["manifest_hash"])
        for unit in plan.levels()[1] + plan.levels()[2]:
            store.save_spec(unit)
            run_unit(store, unit, lambda metrics: None)
            keys.append(unit.key)
        scores.append(store.record(plan.cells[("CL-ILE", fold)])["metrics"]["best_val_f1_avg"])
        tune.report({"folds_done": done, METRIC: sum(scores) / len(scores), "unit_keys": ",".join(keys)})


class _TrialTracking(tune.Callback):
    """Each trial is a child run of the sweep; the units it trained are nested under it."""

    def __init__(self, tracker: SweepTracker, store: ArtifactStore, ctx: Context, space_keys: list[str]):
        self.tracker, self.store, self.ctx, self.space_keys = tracker, store, ctx, space_keys
        self.runs: dict[str, str] = {}

    def _sample(self, trial) -> dict[str, Any]:
        return {k: trial.config[k] for k in self.space_keys}

    def on_trial_start(self, iteration, trials, trial, **info):
        sample = self._sample(trial)
        self.runs[trial.trial_id] = self.tracker.start_child(
            f"search trial {trial.trial_id[-5:]} · {describe_sample(sample)}",
            {"stage": "search-trial", "dataset": self.ctx.args.dataset}, sample)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.log_metrics(self.runs[trial.trial_id], {METRIC: result[METRIC]}, step=int(result["folds_done"]))

    def _end(self, trial, status: str) -> None:
        run_id = self.runs[trial.trial_id]
        for key in filter(None, (trial.last_result or {}).get("unit_keys", "").split(",")):
            if self.store.is_complete(key) and self.store.trained_run_id(key) is None:
                unit_run = self.tracker.start_unit(self.store.load_spec(key), self.ctx.args.dataset, parent_id=run_id)
                self.tracker.finish_unit(key, self.store.record(key), self.store.unit_dir(key), replay_history=True,
                                         run_id=unit_run)
                self.store.set_run_id(key, unit_run)
        self.tracker.client.set_terminated(run_id, status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "FAILED")


def _extend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space-file", default=str(SEARCH_FILE), help="YAML search space")
    parser.add_argument("--num-samples", type=int, help="trials (default: the space file's num_samples)")


def build_plan(ctx: Context) -> Plan:
    """The shared stage-0 units; the trials' stage I/II units depend on the sampled points."""
    load_search_space(ctx.args.space_file)  # refuse a bad space file before any training
    plan = Plan("search")
    for fold in ctx.args.folds:
        add_variant_fold(plan, ctx.cfg, get_variant("A0"), fold, ctx.manifest_hash)
    return plan


def _search(ctx: Context, tracker: SweepTracker, store: ArtifactStore) -> tuple[dict[str, Any], float] | None:
    space = load_search_space(ctx.args.space_file)
    num_samples = ctx.args.num_samples or space.num_samples
    cluster = init_ray(ctx.args.address)
    resources = plan_resources(cluster, "stage2", ctx.args.gpus_per_trial, ctx.args.max_concurrent,
                               cpus_per_gpu_trial=ctx.args.cpus_per_gpu_trial)
    tuner = tune.Tuner(
        tune.with_resources(search_trainable, resources.as_ray()),
        param_space={**space.tune_space(), "store": str(store.root), "base": json.dumps(to_dict(ctx.cfg)),
                     "folds": json.dumps(ctx.args.folds), "manifest_hash": ctx.manifest_hash, "threads": int(resources.cpu)},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(metric=METRIC, mode="max", seed=space.seed), num_samples=num_samples,
            scheduler=ASHAScheduler(time_attr="folds_done", metric=METRIC, mode="max", max_t=len(ctx.args.folds),
                                    grace_period=space.grace_period, reduction_factor=space.reduction_factor),
            max_concurrent_trials=resources.max_concurrent,
        ),
        run_config=tune.RunConfig(name="search", storage_path=str(store.root / "ray_results"), verbose=0,
                                  callbacks=[_TrialTracking(tracker, store, ctx, list(space.space))],
                                  failure_config=tune.FailureConfig(max_failures=ctx.args.retries)),
    )
    results = tuner.fit()
    complete = [r for r in results if r.metrics and r.metrics.get("folds_done") == len(ctx.args.folds)]
    if not complete:
        return None
    best = max(complete, key=lambda r: r.metrics[METRIC])
    return {k: best.config[k] for k in space.space}, best.metrics[METRIC]


def report(ctx: Context, plan: Plan, tracker: SweepTracker, outcome) -> None:
    store = ctx.store
    found = _search(ctx, tracker, store)
    if found is None:
        print("no trial completed every fold: nothing to evaluate", file=sys.stderr)
        return
    sample, val = found
    print(f"\nbest point (mean validation F1 {val:.1f} over folds {ctx.args.folds}): {describe_sample(sample)}")
    tracker.client.log_dict(tracker.parent_id, {"best": sample, "val_f1_avg": val}, "search/best.json")
    final = Plan("search")
    for fold in ctx.args.folds:
        add_variant_fold(final, ctx.cfg, get_variant("CL-ILE"), fold, ctx.manifest_hash, row=PAPER_ROW)
        add_variant_fold(final, apply_sample(ctx.cfg, sample), get_variant("CL-ILE"), fold, ctx.manifest_hash, row=BEST_ROW)
    options = SweepOptions(ctx.args.dataset, ctx.args.address, ctx.args.max_concurrent, ctx.args.gpus_per_trial, ctx.args.retries,
                           cpus_per_gpu_trial=ctx.args.cpus_per_gpu_trial)
    evaluation = execute(final, store, tracker, options)
    outcome.completed |= evaluation.completed
    outcome.failed.update(evaluation.failed)
    outcome.skipped.update(evaluation.skipped)
    print_table(ctx, "Search: the best λ/τ point vs the paper's defaults", [PAPER_ROW, BEST_ROW], tracker, outcome)


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m orchestrator.search", __doc__, "clile-search", argv, build_plan, report, _extend)


if __name__ == "__main__":
    sys.exit(main())
