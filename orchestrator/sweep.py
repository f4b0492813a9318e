"""Executing a plan: reuse completed units, run the missing ones on Ray Tune as soon as their upstream
units are complete, track everything in MLflow, and never leave a run RUNNING."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search import Searcher

from clile_core.atomic import write_text
from clile_core.log import get_logger
from clile_core.models.backbones import parameter_count
from clile_core.names import REUSED_FROM_TAG, RETRIES_TAG, TIMELINE
from clile_core.stages import STAGES, get_stage, stage_order
from orchestrator.execute import REUSED
from orchestrator.pool import tune_trainable, unit_request, warm_workers
from orchestrator.progress import Progress
from orchestrator.resources import TrialResources, explain, init_ray, plan_resources
from orchestrator.store import ArtifactStore
from orchestrator.tracking import SweepTracker
from orchestrator.units import Plan, Unit

log = get_logger("sweep")


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

    def __init__(self, tracker: SweepTracker, store: ArtifactStore, *, units: dict[str, Unit], dataset: str,
                 outcome: SweepOutcome, progress: Progress):
        self.tracker, self.store, self.units, self.dataset, self.outcome = tracker, store, units, dataset, outcome
        self.progress = progress
        self.retries: dict[str, int] = {}

    def on_step_end(self, iteration, trials, **info):
        self.progress.tick()

    def on_trial_start(self, iteration, trials, trial, **info):
        key = trial.config["unit"]
        self.progress.start(key)
        if key not in self.tracker.children:
            self.tracker.start_unit(self.units[key], self.dataset)
            log.info("start  %s", self.units[key].name())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.log_epoch(trial.config["unit"], result)
        self.progress.epoch(trial.config["unit"], result)

    def on_trial_recover(self, iteration, trials, trial, **info):
        key = trial.config["unit"]
        self.progress.retry(key)
        self.retries[key] = self.retries.get(key, 0) + 1
        run_id = self.tracker.children.get(key)
        if run_id:
            self.tracker.client.set_tag(run_id, RETRIES_TAG, str(self.retries[key]))
        log.warning(f"unit {self.units[key].name()} failed; retry {self.retries[key]}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        key = trial.config["unit"]
        self.progress.end(key, self.store.is_complete(key))
        if not self.store.is_complete(key):
            return
        reused = bool((trial.last_result or {}).get(REUSED))  # trained by a concurrent sweep meanwhile
        if reused:
            self.tracker.client.set_tag(self.tracker.children[key], REUSED_FROM_TAG, self.store.trained_run_id(key) or "concurrent sweep")
        self.tracker.finish_unit(key, self.store.record(key), unit_dir=None if reused else self.store.unit_dir(key),
                                 replay_history=reused)
        if not reused:
            self.store.set_run_id(key, self.tracker.children[key])
        self.outcome.completed.add(key)
        log.info("done   %s", self.units[key].name())

    def on_trial_error(self, iteration, trials, trial, **info):
        key = trial.config["unit"]
        self.progress.end(key, ok=False)
        reason = _error_text(trial)
        self.outcome.failed[key] = reason
        self.tracker.fail_unit(key, reason)
        log.warning(f"unit {self.units[key].name()} FAILED: {reason.strip().splitlines()[-1] if reason.strip() else 'unknown'}")


def _error_text(trial: Any) -> str:
    """The trial's traceback: Ray writes it to the trial's local error file before calling back."""
    path = trial.error_file
    if path and Path(path).exists():
        return Path(path).read_text()
    return str(trial.get_error() or "trial errored")


def _reuse(unit: Unit, store: ArtifactStore, tracker: SweepTracker, *, dataset: str, outcome: SweepOutcome) -> None:
    outcome.reused.add(unit.key)
    if unit.key in tracker.finished_units:  # already recorded under this parent before a restart
        return
    tracker.start_unit(unit, dataset, reused_from=store.trained_run_id(unit.key) or "unknown")
    tracker.finish_unit(unit.key, store.record(unit.key), unit_dir=None, replay_history=True)


def _downstream(units: list[Unit]) -> dict[str, list[str]]:
    below: dict[str, list[str]] = {u.key: [] for u in units}
    for unit in units:
        for key in unit.upstream.values():
            if key in below:
                below[key].append(unit.key)
    return below


def longest_first(units: list[Unit]) -> list[Unit]:
    """Priority order of ready units: a trial takes a free slot in this order, so the costliest go first (a
    swin_t started last would run alone while the other slots idle). Stage-0 cost is proxied by the
    backbone's parameter count and dominates; stages I/II train on cached features and cost alike, so
    among them a unit with a longer chain below it goes first (it unlocks more work), else order is kept."""
    sizes = {u.backbone: parameter_count(u.backbone) for u in units if get_stage(u.stage).on_images}
    below = _downstream(units)
    height: dict[str, int] = {}
    for unit in reversed(sorted(units, key=lambda u: stage_order(u.stage))):
        height[unit.key] = 1 + max((height[k] for k in below[unit.key]), default=0)
    return sorted(units, key=lambda u: (sizes.get(u.backbone, 0) if get_stage(u.stage).on_images else 0, height[u.key]),
                  reverse=True)


class DagSearcher(Searcher):
    """Ray Tune's source of trials for a whole plan: it suggests a unit only once every upstream unit is in
    the store, so no level waits for the slowest unit of the previous one (no barriers).

    Tune asks for a trial whenever a slot is free (``max_concurrent_trials`` wraps this in a
    ``ConcurrencyLimiter``). ``suggest`` answers the highest-priority ready unit; ``None`` when every
    queued unit still waits on a running one (Tune asks again after the next trial event); ``FINISHED``
    once nothing is queued. A unit whose upstream failed, or was itself dropped, is dropped with it.
    """

    def __init__(self, units: list[Unit], store: ArtifactStore, threads: dict[str, int]):
        super().__init__()
        self.queued = longest_first(units)
        self.store, self.threads = store, threads
        self.running: dict[str, str] = {}  # trial id -> unit key
        self.failed: set[str] = set()
        self.skipped: dict[str, str] = {}  # unit key -> the upstream unit that did not complete

    def _drop_blocked(self) -> None:
        live = {u.key for u in self.queued} | set(self.running.values())
        for unit in sorted(self.queued, key=lambda u: stage_order(u.stage)):  # upstream before downstream
            lost = [k for k in unit.upstream.values() if k not in live and not self.store.is_complete(k)]
            if lost:
                self.skipped[unit.key] = lost[0]
                live.discard(unit.key)
        self.queued = [u for u in self.queued if u.key not in self.skipped]

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self._drop_blocked()
        for unit in self.queued:
            if all(self.store.is_complete(k) for k in unit.upstream.values()):
                self.queued.remove(unit)
                self.running[trial_id] = unit.key
                return {"unit": unit.key, "threads": self.threads[unit.stage]}
        return Searcher.FINISHED if not self.queued else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self.running.pop(trial_id, None)
        if key is not None and (error or not self.store.is_complete(key)):
            self.failed.add(key)

    def save(self, checkpoint_path: str) -> None:
        # Nothing to restore from: a restarted sweep rebuilds its queue from what the store holds.
        Path(checkpoint_path).write_text(json.dumps({"queued": [u.key for u in self.queued]}))

    def restore(self, checkpoint_path: str) -> None:
        pass


def _stage_resources(cluster: dict[str, float], units: list[Unit], options: SweepOptions) -> dict[str, TrialResources]:
    return {stage: plan_resources(cluster, stage, options.gpus_per_trial, options.max_concurrent,
                                  cpus_per_gpu_trial=options.cpus_per_gpu_trial) for stage in {u.stage for u in units}}


def start_ray(plan: Plan, store: ArtifactStore, options: SweepOptions) -> dict[str, float] | None:
    """Start Ray if ``plan`` has units to train (``None`` if not) and return its resources. Started here, Ray
    also begins importing the unit's stack into one pooled worker per slot (``pool.warm_workers``; CPU-only
    clusters: a GPU unit's worker is not reused), so a driver that calls this before setting up MLflow has
    the imports run meanwhile. A Ray already running (started earlier, or by ``search``) is left as it is."""
    import ray

    pending = [u for u in plan.units.values() if not store.is_complete(u.key)]
    if not pending:
        return None
    if ray.is_initialized():
        return ray.cluster_resources()
    cluster = init_ray(options.address)
    resources = _stage_resources(cluster, pending, options)
    if all(r.gpu == 0 for r in resources.values()):
        warm_workers(min(len(pending), max(r.max_concurrent for r in resources.values())),
                     min(r.cpu for r in resources.values()))
    return cluster


def _run_dag(units: list[Unit], store: ArtifactStore, tracker: SweepTracker, *, options: SweepOptions,
             cluster: dict[str, float], outcome: SweepOutcome, name: str) -> None:
    """One Tune run over every unit to train: trials start as their upstream completes and a slot is free."""
    resources = _stage_resources(cluster, units, options)
    searcher = DagSearcher(units, store, {stage: int(r.cpu) for stage, r in resources.items()})
    requests = {stage: unit_request(r.cpu, r.gpu) for stage, r in resources.items()}
    stage_of = {u.key: u.stage for u in units}
    progress = Progress(units)
    callback = _TrackingCallback(tracker, store, units={u.key: u for u in units}, dataset=options.dataset, outcome=outcome,
                                 progress=progress)
    tuner = tune.Tuner(
        tune.with_resources(tune_trainable, lambda config: requests[stage_of[config["unit"]]]),
        param_space={"store": store.location},
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=len(units), reuse_actors=True,
                                    max_concurrent_trials=max(r.max_concurrent for r in resources.values())),
        run_config=tune.RunConfig(
            name=name, storage_path=str(store.root / "ray_results"), callbacks=[callback], verbose=0,
            failure_config=tune.FailureConfig(max_failures=options.retries),
        ),
    )
    started = time.time()
    with progress:
        tuner.fit()
        for key in searcher.skipped:
            progress.skip(key)
    first = min((s.started for s in progress.states.values() if s.started), default=time.time()) - started
    write_text(store.root / "ray_results" / name / TIMELINE, json.dumps(progress.timeline(), indent=1))
    log.info(f"timing: sweep phase {time.time() - started:.1f}s (one Tune run over {len(units)} units; "
             f"start-up {first:.1f}s: the first unit started after Ray started its first trial actor)")
    outcome.skipped.update(searcher.skipped)
    for unit in units:  # a trial that ended without completing its unit (e.g. killed actor) is a failure too
        if not store.is_complete(unit.key) and unit.key not in outcome.failed and unit.key not in outcome.skipped:
            outcome.failed[unit.key] = "trial ended without completing its unit"
            tracker.fail_unit(unit.key, outcome.failed[unit.key])


def execute(plan: Plan, store: ArtifactStore, tracker: SweepTracker, options: SweepOptions) -> SweepOutcome:
    """Run every unit of ``plan`` that the store lacks; a failed unit's downstream units are skipped."""
    outcome = SweepOutcome()
    removed = store.clean_stale()
    if removed:
        log.warning(f"removed {removed} unfinished unit workspace(s) left by an earlier crash; those units rerun")
    pending = []
    for unit in plan.units.values():
        if store.is_complete(unit.key):
            _reuse(unit, store, tracker, dataset=options.dataset, outcome=outcome)
        else:
            pending.append(unit)
            store.save_spec(unit)
    if pending:
        cluster = start_ray(plan, store, options)
        log.info(explain(cluster, options.gpus_per_trial))
        counts = ", ".join(f"{sum(u.stage == name for u in pending)} {stage.label}" for name, stage in STAGES.items())
        log.info(f"{len(pending)} unit(s) to train ({counts}), {len(plan.units) - len(pending)} reused")
        _run_dag(pending, store, tracker, options=options, cluster=cluster, outcome=outcome,
                 name=f"{plan.command}-{time.strftime('%Y%m%d-%H%M%S')}")
    for key, upstream in outcome.skipped.items():
        log.warning(f"skipped {plan.units[key].name()}: upstream unit {upstream} did not complete")
    return outcome
