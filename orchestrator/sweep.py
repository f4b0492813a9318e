"""Executing a plan: reuse completed units, run the missing ones level by level on Ray Tune, track
everything in MLflow, and never leave a run RUNNING."""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from clile_core.models.backbones import parameter_count
from orchestrator.execute import tune_trainable
from orchestrator.resources import explain, init_ray, plan_resources, warn
from orchestrator.store import ArtifactStore
from orchestrator.tracking import SweepTracker
from orchestrator.units import Plan, Unit


@dataclass
class SweepOptions:
    dataset: str
    address: str | None = None
    max_concurrent: int | None = None
    gpus_per_trial: float = 0.25
    retries: int = 1
    cpus_per_gpu_trial: int | None = None


@dataclass
class SweepOutcome:
    completed: set[str] = field(default_factory=set)
    reused: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason
    skipped: dict[str, str] = field(default_factory=dict)  # key -> failed upstream


def sweep_key(plan: Plan) -> str:
    return hashlib.sha256((plan.command + "|" + ",".join(sorted(plan.units))).encode()).hexdigest()[:16]


def describe(plan: Plan, store: ArtifactStore) -> str:
    """The dry-run listing: every unit, whether it is cached, and what will run."""
    lines = []
    for level in plan.levels():
        for unit in level:
            state = "cached" if store.is_complete(unit.key) else "will run"
            lines.append(f"  {state:9s} {unit.key}  {unit.name()}")
    to_run = sum(not store.is_complete(k) for k in plan.units)
    lines.append(f"{len(plan.units)} units: {len(plan.units) - to_run} cached, {to_run} to run")
    return "\n".join(lines)


class _TrackingCallback(tune.Callback):
    """Relays trial events to MLflow from the driver (the single writer)."""

    def __init__(self, tracker: SweepTracker, store: ArtifactStore, units: dict[str, Unit], dataset: str, outcome: SweepOutcome):
        self.tracker, self.store, self.units, self.dataset, self.outcome = tracker, store, units, dataset, outcome
        self.retries: dict[str, int] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        key = trial.config["unit"]
        if key not in self.tracker.children:
            self.tracker.start_unit(self.units[key], self.dataset)
            print(f"[sweep] start  {self.units[key].name()}", file=sys.stderr)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.log_epoch(trial.config["unit"], result)

    def on_trial_recover(self, iteration, trials, trial, **info):
        key = trial.config["unit"]
        self.retries[key] = self.retries.get(key, 0) + 1
        run_id = self.tracker.children.get(key)
        if run_id:
            self.tracker.client.set_tag(run_id, "retries", str(self.retries[key]))
        warn(f"unit {self.units[key].name()} failed; retry {self.retries[key]}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        key = trial.config["unit"]
        if not self.store.is_complete(key):
            return
        self.tracker.finish_unit(key, self.store.record(key), self.store.unit_dir(key), replay_history=False)
        self.store.set_run_id(key, self.tracker.children[key])
        self.outcome.completed.add(key)
        print(f"[sweep] done   {self.units[key].name()}", file=sys.stderr)

    def on_trial_error(self, iteration, trials, trial, **info):
        key = trial.config["unit"]
        reason = _error_text(trial)
        self.outcome.failed[key] = reason
        self.tracker.fail_unit(key, reason)
        warn(f"unit {self.units[key].name()} FAILED: {reason.strip().splitlines()[-1] if reason.strip() else 'unknown'}")


def _error_text(trial: Any) -> str:
    """The trial's traceback: Ray writes it to the trial's local error file before calling back."""
    path = trial.error_file
    if path and Path(path).exists():
        return Path(path).read_text()
    return str(trial.get_error() or "trial errored")


def _reuse(unit: Unit, store: ArtifactStore, tracker: SweepTracker, dataset: str, outcome: SweepOutcome) -> None:
    outcome.reused.add(unit.key)
    if unit.key in tracker.finished_units:  # already recorded under this parent before a restart
        return
    tracker.start_unit(unit, dataset, reused_from=store.trained_run_id(unit.key) or "unknown")
    tracker.finish_unit(unit.key, store.record(unit.key), None, replay_history=True)


def longest_first(units: list[Unit]) -> list[Unit]:
    """Trials start in list order and take free slots as others end, so the costliest go first: a swin_t
    started last would run alone while the other slots idle. Stage-0 cost is proxied by the backbone's
    parameter count; stages I/II train on cached features and cost alike, so their order is kept."""
    sizes = {u.backbone: parameter_count(u.backbone) for u in units if u.stage == "stage0"}
    return sorted(units, key=lambda u: sizes.get(u.backbone, 0) if u.stage == "stage0" else 0, reverse=True)


def _run_level(stage: str, units: list[Unit], store: ArtifactStore, tracker: SweepTracker, options: SweepOptions,
               cluster: dict[str, float], outcome: SweepOutcome, name: str) -> None:
    resources = plan_resources(cluster, stage, options.gpus_per_trial, options.max_concurrent,
                               cpus_per_gpu_trial=options.cpus_per_gpu_trial)
    callback = _TrackingCallback(tracker, store, {u.key: u for u in units}, options.dataset, outcome)
    tuner = tune.Tuner(
        tune.with_resources(tune_trainable, resources.as_ray()),
        param_space={"store": str(store.root), "threads": int(resources.cpu),
                     "unit": tune.grid_search([u.key for u in units])},
        tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{name}-{stage}", storage_path=str(store.root / "ray_results"), callbacks=[callback], verbose=0,
            failure_config=tune.FailureConfig(max_failures=options.retries),
        ),
    )
    tuner.fit()
    for unit in units:  # a trial that ended without completing its unit (e.g. killed actor) is a failure too
        if not store.is_complete(unit.key) and unit.key not in outcome.failed:
            outcome.failed[unit.key] = "trial ended without completing its unit"
            tracker.fail_unit(unit.key, outcome.failed[unit.key])


def execute(plan: Plan, store: ArtifactStore, tracker: SweepTracker, options: SweepOptions) -> SweepOutcome:
    """Run every unit of ``plan`` that the store lacks; a failed unit's downstream units are skipped."""
    outcome = SweepOutcome()
    removed = store.clean_stale()
    if removed:
        warn(f"removed {removed} unfinished unit workspace(s) left by an earlier crash; those units rerun")
    cluster: dict[str, float] | None = None
    name = f"{plan.command}-{time.strftime('%Y%m%d-%H%M%S')}"
    for level in plan.levels():
        pending = []
        for unit in level:
            broken = [k for k in unit.upstream.values() if not store.is_complete(k)]
            if broken:
                outcome.skipped[unit.key] = broken[0]
            elif store.is_complete(unit.key):
                _reuse(unit, store, tracker, options.dataset, outcome)
            else:
                pending.append(unit)
        pending = longest_first(pending)
        for unit in pending:
            store.save_spec(unit)
        if pending:
            if cluster is None:
                cluster = init_ray(options.address)
                warn(explain(cluster, options.gpus_per_trial))
            warn(f"{level[0].stage}: {len(pending)} unit(s) to train, {len(level) - len(pending)} reused or skipped")
            _run_level(level[0].stage, pending, store, tracker, options, cluster, outcome, name)
    for key, upstream in outcome.skipped.items():
        warn(f"skipped {plan.units[key].name()}: upstream unit {upstream} did not complete")
    return outcome
