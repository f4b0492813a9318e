"""``python -m orchestrator.search``: Optuna TPE (Ray Tune's OptunaSearch) over λ, λ1, λ2, λ3, τ and the
stage learning rate, maximising mean validation F1 over folds with ASHA stopping weak trials; the best
point is then evaluated once on the test folds beside the paper's defaults."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from clile_core.config import RunConfig, merge, to_dict
from clile_core.log import get_logger
from clile_core.names import BEST_VAL_F1_AVG, DATASET_TAG, STAGE_TAG
from clile_core.variants import get_variant
from orchestrator.cli import Context, run_command
from orchestrator.execute import claim_trial_share, run_unit
from orchestrator.preflight import at_least
from orchestrator.report import print_table
from orchestrator.resources import init_ray, plan_resources
from orchestrator.search_space import SEARCH_FILE, apply_sample, describe_sample, load_search_space
from orchestrator.store import ArtifactStore
from orchestrator.sweep import SweepOptions, execute, sweep_key
from orchestrator.tracking import SweepTracker
from orchestrator.units import Plan, Unit, add_variant_fold

METRIC = "val_f1_avg"  # mean over folds of the best-epoch validation F1: test subjects never enter it
PAPER_ROW, BEST_ROW = "paper defaults", "search best"
log = get_logger("search")
SHARED_VARIANT = "A0"  # its units (stage 0) are trained once by the sweep and shared by every trial


def _fold_units(cfg: RunConfig, fold: int, *, seed: int, manifest_hash: str, variant: str = "CL-ILE") -> Plan:
    plan = Plan("search")
    add_variant_fold(plan, cfg, get_variant(variant), fold, manifest_hash, seed=seed)
    return plan


def _trial_units(plan: Plan, cfg: RunConfig, fold: int, *, seed: int, manifest_hash: str) -> list[Unit]:
    """The units of ``plan`` a trial trains: all but the shared ones ``build_plan`` trained before (A0's:
    the sampled keys never enter their key), upstream first."""
    shared = _fold_units(cfg, fold, seed=seed, manifest_hash=manifest_hash, variant=SHARED_VARIANT).units
    return [unit for unit in plan.ordered() if unit.key not in shared]


def search_trainable(config: dict[str, Any]) -> None:
    """One sampled point: stage I + II of CL-ILE per fold (units stored, so reusable), reporting the
    running mean validation F1 after each fold — the resource ASHA allocates."""
    claim_trial_share(int(config["threads"]))
    store = ArtifactStore(config["store"])
    cfg = apply_sample(merge(RunConfig(), json.loads(config["base"]), "search base"), config)
    scores, keys = [], []
    for done, fold in enumerate(json.loads(config["folds"]), start=1):
        for seed in json.loads(config["seeds"]):
            plan = _fold_units(cfg, fold, seed=seed, manifest_hash=config["manifest_hash"])
            for unit in _trial_units(plan, cfg, fold, seed=seed, manifest_hash=config["manifest_hash"]):
                store.save_spec(unit)
                run_unit(store, unit, lambda metrics: None)
                keys.append(unit.key)
            scores.append(store.record(plan.cells[("CL-ILE", fold, seed)])["metrics"][BEST_VAL_F1_AVG])
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
            {STAGE_TAG: "search-trial", DATASET_TAG: self.ctx.args.dataset}, sample)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.log_metrics(self.runs[trial.trial_id], {METRIC: result[METRIC]}, step=int(result["folds_done"]))

    def _end(self, trial, status: str) -> None:
        run_id = self.runs[trial.trial_id]
        for key in filter(None, (trial.last_result or {}).get("unit_keys", "").split(",")):
            if self.store.is_complete(key) and self.store.trained_run_id(key) is None:
                unit_run = self.tracker.start_unit(self.store.load_spec(key), self.ctx.args.dataset, parent_id=run_id)
                self.tracker.finish_unit(key, self.store.record(key), unit_dir=self.store.unit_dir(key), replay_history=True,
                                         run_id=unit_run)
                self.store.set_run_id(key, unit_run)
        self.tracker.client.set_terminated(run_id, status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "FAILED")


def _extend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space-file", default=str(SEARCH_FILE), help="YAML search space")
    parser.add_argument("--num-samples", type=at_least(1), help="trials (default: the space file's num_samples)")


def build_plan(ctx: Context) -> Plan:
    """The shared stage-0 units; the trials' stage I/II units depend on the sampled points."""
    load_search_space(ctx.args.space_file)  # refuse a bad space file before any training
    plan = Plan("search")
    for fold in ctx.args.folds:
        for seed in ctx.seeds:
            add_variant_fold(plan, ctx.cfg, get_variant(SHARED_VARIANT), fold, ctx.manifest_hash, seed=seed)
            # the trials train the rest of CL-ILE on these units (e.g. from stage 0's feature cache)
            fold_plan = _fold_units(ctx.cfg, fold, seed=seed, manifest_hash=ctx.manifest_hash)
            for unit in fold_plan.units.values():
                if unit.key in plan.units:
                    plan.units[unit.key].downstream = unit.downstream
    return plan


STUDY_FILE = "optuna.db"


def study_storage(tracking_uri: str) -> str:
    """The Optuna study's SQLite file: beside an SQLite tracking store, else in the working directory."""
    folder = Path(tracking_uri.removeprefix("sqlite:///")).parent if tracking_uri.startswith("sqlite:///") else Path.cwd()
    return f"sqlite:///{(folder / STUDY_FILE).resolve()}"


def study_name(ctx: Context, plan: Plan) -> str:
    """One study per sweep: the same command, data, config, folds and space continue the same study."""
    payload = json.dumps([sweep_key(plan), to_dict(ctx.cfg), Path(ctx.args.space_file).read_text()], sort_keys=True)
    return f"search-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def open_study(url: str, name: str) -> tuple[optuna.Study, int]:
    """Load (or create) the study; trials left RUNNING by a killed driver become FAIL and their points are
    queued again, so they are evaluated once. Returns the study and how many trials have ended."""
    with FileLock(url.removeprefix("sqlite:///") + ".lock"):  # two drivers never create the schema at once
        storage = optuna.storages.RDBStorage(url)
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
    ended = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    return study, ended


class ResumableSampler(optuna.samplers.BaseSampler):
    """TPE whose draw for a new point depends only on the seed and the points before it, so a search
    killed and resumed draws the points an uninterrupted one would, and reports the same best point.

    A point's random state is ``seed + k``, k counting the study's earlier trials that did not fail: the
    trial a kill left FAIL is rerun from its own (enqueued) point, so it must not shift the later draws.
    TPE keeps no state besides its random generator, so a fresh one per trial loses nothing.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._tpe = optuna.samplers.TPESampler(seed=seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        earlier = study.get_trials(deepcopy=False)
        k = sum(t.number < trial.number and t.state != TrialState.FAIL for t in earlier)
        self._tpe = optuna.samplers.TPESampler(seed=self.seed + k)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe.after_trial(study, trial, state, values)


def best_trial(study: optuna.Study, covers_all_folds) -> optuna.trial.FrozenTrial | None:
    """The best trial whose point was trained on every fold (ASHA stops the others early, and Optuna then
    holds a partial mean for them)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and covers_all_folds(t.params)]
    return max(complete, key=lambda t: t.value) if complete else None


def _search(ctx: Context, plan: Plan, tracker: SweepTracker, store: ArtifactStore) -> tuple[dict[str, Any], float] | None:
    space = load_search_space(ctx.args.space_file)
    num_samples = ctx.args.num_samples or space.num_samples
    url, name = study_storage(ctx.tracking_uri), study_name(ctx, plan)
    study, ended = open_study(url, name)
    remaining = num_samples - ended
    log.info(f"study '{name}' in {url}: {ended} trial(s) already ended, {max(remaining, 0)} to run")
    if remaining > 0:
        cluster = init_ray(ctx.args.address)
        # a trial trains its units one after another, so it asks for what the most demanding of them needs
        fold, seed = ctx.args.folds[0], ctx.seeds[0]
        fold_plan = _fold_units(ctx.cfg, fold, seed=seed, manifest_hash=ctx.manifest_hash)
        trial_stages = {u.stage for u in _trial_units(fold_plan, ctx.cfg, fold, seed=seed, manifest_hash=ctx.manifest_hash)}
        resources = max((plan_resources(cluster, stage, ctx.args.gpus_per_trial, ctx.args.max_concurrent,
                                        cpus_per_gpu_trial=ctx.args.cpus_per_gpu_trial) for stage in sorted(trial_stages)),
                        key=lambda r: (r.gpu, r.cpu))
        sampler = ResumableSampler(space.seed)
        tuner = tune.Tuner(
            tune.with_resources(search_trainable, resources.as_ray()),
            param_space={**space.tune_space(), "store": store.location, "base": json.dumps(to_dict(ctx.cfg)),
                         "folds": json.dumps(ctx.args.folds), "seeds": json.dumps(ctx.seeds),
                         "manifest_hash": ctx.manifest_hash, "threads": int(resources.cpu)},
            tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(metric=METRIC, mode="max", sampler=sampler, study_name=name,
                                        storage=optuna.storages.RDBStorage(url)),
                num_samples=remaining,
                scheduler=ASHAScheduler(time_attr="folds_done", metric=METRIC, mode="max", max_t=len(ctx.args.folds),
                                        grace_period=space.grace_period, reduction_factor=space.reduction_factor),
                max_concurrent_trials=resources.max_concurrent,
            ),
            run_config=tune.RunConfig(name="search", storage_path=str(store.root / "ray_results"), verbose=0,
                                      callbacks=[_TrialTracking(tracker, store, ctx, list(space.space))],
                                      failure_config=tune.FailureConfig(max_failures=ctx.args.retries)),
        )
        tuner.fit()

    def covers_all_folds(params: dict[str, Any]) -> bool:
        cfg = apply_sample(ctx.cfg, params)
        return all(store.is_complete(_fold_units(cfg, fold, seed=seed, manifest_hash=ctx.manifest_hash).cells[("CL-ILE", fold, seed)])
                   for fold in ctx.args.folds for seed in ctx.seeds)

    best = best_trial(study, covers_all_folds)
    if best is None:
        return None
    return {k: best.params[k] for k in space.space}, best.value


def report(ctx: Context, plan: Plan, tracker: SweepTracker, outcome) -> None:
    store = ctx.store
    found = _search(ctx, plan, tracker, store)
    if found is None:
        log.warning("no trial completed every fold: nothing to evaluate")
        return
    sample, val = found
    print(f"\nbest point (mean validation F1 {val:.1f} over folds {ctx.args.folds}): {describe_sample(sample)}")
    tracker.client.log_dict(tracker.parent_id, {"best": sample, "val_f1_avg": val}, "search/best.json")
    final = Plan("search")
    for fold in ctx.args.folds:
        for seed in ctx.seeds:
            add_variant_fold(final, ctx.cfg, get_variant("CL-ILE"), fold, ctx.manifest_hash, seed=seed, row=PAPER_ROW)
            add_variant_fold(final, apply_sample(ctx.cfg, sample), get_variant("CL-ILE"), fold, ctx.manifest_hash,
                             seed=seed, row=BEST_ROW)
    options = SweepOptions(ctx.args.dataset, ctx.args.address, ctx.args.max_concurrent, ctx.args.gpus_per_trial, ctx.args.retries,
                           cpus_per_gpu_trial=ctx.args.cpus_per_gpu_trial)
    evaluation = execute(final, store, tracker, options)
    outcome.completed |= evaluation.completed
    outcome.failed.update(evaluation.failed)
    outcome.skipped.update(evaluation.skipped)
    print_table(ctx, "Search: the best λ/τ point vs the paper's defaults", rows=[PAPER_ROW, BEST_ROW], tracker=tracker,
                outcome=outcome)


def main(argv: list[str] | None = None) -> int:
    return run_command("python -m orchestrator.search", __doc__, "clile-search", argv,
                       build_plan=build_plan, report=report, extend_parser=_extend)


if __name__ == "__main__":
    sys.exit(main())
