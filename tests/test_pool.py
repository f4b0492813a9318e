"""Light trials, pooled workers: a sweep's trial actor runs its unit as a Ray task, the task's worker process
is reused by the next unit, and a unit's failure still fails its trial so Tune retries it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sweep_helpers import completed_units, run

from orchestrator.pool import _trial_runtime_env
from orchestrator.store import OWNER


def test_the_trial_side_imports_no_training_stack():
    # Tune's trial actors import this module to unpickle the trainable: torch there costs 14–20 s per actor.
    probe = "import sys, orchestrator.pool; print(sorted(m for m in ('torch', 'mlflow', 'matplotlib', 'clile_core') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.strip() == "[]"


def test_warm_workers_share_the_trial_actors_runtime_env():
    # Ray pools workers per runtime environment; unit tasks inherit their trial actor's (Tune adds env vars),
    # so a worker warmed under another one would sit idle while each unit started a cold worker.
    from ray.tune.execution.class_cache import _ActorClassCache

    class Trainable:
        pass

    assert dict(_ActorClassCache().get(Trainable).__ray_metadata__.runtime_env) == _trial_runtime_env()


# A warmed worker, idle for longer than Ray's idle-kill threshold (1 s), then asked for by a Tune trial's child
# task: it must be that very worker. Run in a fresh interpreter, which starts its own local Ray.
REUSE_PROBE = """
import json, os, sys, time
import ray
from ray import tune
from orchestrator.pool import unit_request, warm_workers
from orchestrator.resources import init_ray

init_ray(None)
warm = ray.get(warm_workers(1, 1))
time.sleep(3)

@ray.remote
def pid():
    return os.getpid()

def trainable(config):
    tune.report({"worker": ray.get(pid.remote())})

tuner = tune.Tuner(tune.with_resources(trainable, unit_request(1, 0)), tune_config=tune.TuneConfig(num_samples=2),
                   run_config=tune.RunConfig(storage_path=sys.argv[1], verbose=0))
print(json.dumps({"warm": warm, "units": [r.metrics["worker"] for r in tuner.fit()]}))
"""


def test_a_warmed_worker_survives_idling_and_runs_the_trials_units(tmp_path):
    out = subprocess.run([sys.executable, "-c", REUSE_PROBE, str(tmp_path)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    pids = json.loads(out.stdout.strip().splitlines()[-1])
    assert pids["units"] == [pids["warm"][0]] * 2


def _trial_pids(store: Path) -> set[int]:
    """The trial actors' processes, as Tune recorded them in each trial's results."""
    return {json.loads(line)["pid"] for path in (store / "ray_results").glob("*/*/result.json")
            for line in path.read_text().splitlines() if line.strip()}


def test_units_run_in_one_pooled_worker_outside_the_trial_actors(tmp_path):
    # One slot and a chain of three units (stage 0 -> stage I -> stage II): one after another, each a trial.
    result = run(tmp_path, "ablate", "--folds", "1", "--variants", "CL-ILE", "--max-concurrent", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    store = tmp_path / "clile_store"
    units = completed_units(store)
    assert len(units) == 3
    # the workspace's owner file, kept in the unit's folder, names the process that trained it
    workers = {json.loads((store / "units" / key / OWNER).read_text())["pid"] for key in units}
    assert len(workers) == 1, f"each unit should reuse the first unit's worker process, got {workers}"
    trials = _trial_pids(store)
    assert trials and not workers & trials  # the trial actors only waited for their unit's task
