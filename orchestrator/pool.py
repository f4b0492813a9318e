"""Light trials, pooled workers: how a sweep's Tune trial runs its unit.

Tune starts one actor per trial, and an actor that imports torch and our training code takes 14–20 s to
become ready on a busy 2-core machine; Tune meanwhile hands a freed actor to the waiting trial and stops
the one still starting, so short units ran one after another. Here the trial actor imports neither: it
runs the unit as a Ray task inside the trial's placement group (Tune captures child tasks there), and
Ray keeps a finished task's worker process in its pool for the next task, so the heavy imports are paid
once per pooled worker instead of once per trial. Tune still schedules, retries and resumes trials as
before: a task that raises fails its trial, and a stopped trial's placement group takes its task with it.

Two things keep the pool warm. Ray kills idle workers beyond a soft limit (by default one per CPU, and the
trial actors count too), which would throw a warm worker away between two units: ``ray_system_config``
raises it. And ``warm_workers`` imports the unit's stack into as many workers as there are slots while the
first trials get going, so the slot that waits for a second ready unit (a sweep starts with stage 0 alone)
finds a worker ready instead of importing torch then.

This module must stay importable without torch: Tune's trial actors import it to unpickle the trainable.
"""

from __future__ import annotations

import importlib
import os
import queue
import threading
from typing import Any, Iterator

import ray

_END = object()  # the unit returned: no more reports
# What a unit imports to start training, and what it imports once trained (lazily, in execute._train):
# the MLflow model and the figures.
UNIT_STACK = ("orchestrator.execute",)
UNIT_FINISH = ("orchestrator.au_model", "reports.figures")


def ray_system_config(cpus: int) -> dict[str, int]:
    """Ray settings for a local Ray that runs sweeps: keep idle workers up to a light trial actor, a unit
    worker and a spare per CPU (Ray's default, one worker per CPU, counts the actors and kills the rest)."""
    return {"num_workers_soft_limit": 3 * cpus}


def _unit_reports(store_location: str, unit_key: str, threads: int) -> Iterator[dict[str, Any]]:
    """Ray task body: run the unit, yielding each report (epochs, then the final metrics) as it comes.

    ``run_unit`` reports through a callback; a generator cannot yield from inside one, so the unit runs in
    a thread that feeds a queue, and the task yields from the queue. Its error is re-raised here, after
    the reports made before it, so the trial fails (and Tune retries it) with the unit's own traceback.
    """
    # Imported here, in the pooled worker: once per process, then cached for the next unit.
    from orchestrator.execute import claim_trial_share, run_unit
    from orchestrator.store import ArtifactStore

    reports: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            claim_trial_share(threads)  # in this thread: OpenMP's thread count is per thread
            store = ArtifactStore(store_location)
            run_unit(store, store.load_spec(unit_key), reports.put)
        except BaseException as exc:  # noqa: BLE001 — handed to the task's thread, raised there
            failure.append(exc)
        finally:
            reports.put(_END)

    worker = threading.Thread(target=work, name=f"unit-{unit_key}", daemon=True)
    worker.start()
    while (item := reports.get()) is not _END:
        yield item
    worker.join()
    if failure:
        raise failure[0]


# No Ray-level retries: a failed unit fails its trial, and Tune's FailureConfig decides (as for every trial).
_cpu_task = ray.remote(max_retries=0)(_unit_reports)
# A worker that initialised CUDA keeps the GPU it first saw, whatever the next task is assigned, so a GPU
# unit's worker is not reused (Ray's own default for GPU tasks, ray-project/ray#29624).
_gpu_task = ray.remote(max_retries=0, max_calls=1)(_unit_reports)


def _import(modules: tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(module)


def _import_unit_stack() -> int:
    """Import what a unit needs to start; what it needs to finish goes on in a thread after the task
    returns, beside the first unit's training (a unit that gets there first waits on Python's import lock),
    so the first unit, on the critical path, starts as early as it can."""
    _import(UNIT_STACK)
    threading.Thread(target=_import, args=(UNIT_FINISH,), name="warm-finish-imports", daemon=True).start()
    return os.getpid()


_warm_task = ray.remote(max_retries=0)(_import_unit_stack)


def _trial_runtime_env() -> dict[str, Any]:
    """The runtime environment of Tune's trial actors, which their unit tasks inherit. Ray pools workers
    per runtime environment, so a worker warmed with any other (the driver's) would never run a unit."""
    from ray.tune.execution.class_cache import DEFAULT_ENV_VARS, ENV_VARS_TO_PROPAGATE

    return {"env_vars": {**DEFAULT_ENV_VARS, **{k: os.environ[k] for k in ENV_VARS_TO_PROPAGATE if k in os.environ}}}


def warm_workers(count: int, cpus: float) -> list[ray.ObjectRef]:
    """Start importing the unit's stack in ``count`` pooled workers, each holding ``cpus`` (a trial's share,
    so the trials' placement groups form once the imports are done instead of competing with them for
    the cores). Returns the tasks' refs; each resolves to its worker's pid."""
    task = _warm_task.options(num_cpus=cpus, runtime_env=_trial_runtime_env())
    return [task.remote() for _ in range(count)]


def trial_bundle() -> dict[str, float]:
    """The unit's share of the current trial: the last bundle of its placement group (the first, the trial
    actor's, is empty and Ray drops it)."""
    group = ray.util.get_current_placement_group()
    bundle = group.bundle_specs[-1] if group else {}
    return {"CPU": float(bundle.get("CPU", 0.0)), "GPU": float(bundle.get("GPU", 0.0))}


def unit_request(cpu: float, gpu: float) -> Any:  # a tune.PlacementGroupFactory (tune imported lazily)
    """What a trial asks Ray for: an empty bundle for the light trial actor, and the unit's bundle."""
    from ray import tune

    return tune.PlacementGroupFactory([{"CPU": 0}, {"CPU": cpu, "GPU": gpu}])


def tune_trainable(config: dict[str, Any]) -> None:
    """Ray Tune entry point: ``config`` names the store and the unit key; everything else is in the store."""
    from ray import tune

    share = trial_bundle()
    task = _gpu_task if share["GPU"] > 0 else _cpu_task
    stream = task.options(num_cpus=share["CPU"], num_gpus=share["GPU"]).remote(
        config["store"], config["unit"], int(config.get("threads", 1)))
    for ref in stream:
        tune.report(ray.get(ref))
