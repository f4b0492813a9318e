"""Two sweeps at once on one store and tracking store, and Ctrl-C: units trained once, parents resumed only
when their driver is gone, nothing left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from sweep_helpers import command, completed_units, main_table, run, runs, unit_runs

from clile_core.config import RunConfig
from clile_core.variants import get_variant
from orchestrator import execute
from orchestrator.liveness import is_gone, process_identity
from clile_core.names import DRIVER_TAG, UNIT_RECORD
from orchestrator.store import ArtifactStore
from orchestrator.tracking import SweepTracker
from orchestrator.units import Plan, add_variant_fold

SWEEP = ("--folds", "1", "--variants", "A0", "CL-ILE")  # 3 units: stage 0, stage I, stage II
# Ctrl-C must land while stage I trains: at the tiny sizes one epoch takes milliseconds, so stage I gets
# enough epochs to last seconds on an idle machine (the watcher polls every 0.3 s).
INTERRUPTED = (*SWEEP, "--set", "stage1.epochs=400")


def test_liveness_of_driver_identities():
    assert not is_gone(process_identity())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(child.pid)
    child.wait()
    assert is_gone(identity)
    host, pid, started = process_identity().split(":")
    assert is_gone(f"{host}:{pid}:{float(started) - 100:.2f}")  # same pid, another process (pid reused)
    assert not is_gone(f"elsewhere.example:{pid}:{started}")  # another host: cannot tell, so treated as alive
    assert is_gone("")  # a parent from before identities were recorded


def test_parent_is_resumed_only_when_its_driver_is_gone(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def tracker() -> SweepTracker:
        return SweepTracker(uri, experiment="exp", command="ablate", dataset="synthetic", sweep_key="key1",
                            params={"units": 1})

    first = tracker()  # still "running": this process is its driver
    second = tracker()
    assert not second.resumed and second.parent_id != first.parent_id
    first.client.set_tag(first.parent_id, DRIVER_TAG, "ghost-host-of-a-killed-driver:1:1.00")
    assert not tracker().resumed  # another host: maybe alive, not taken over
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = process_identity(child.pid)
    child.wait()
    first.client.set_tag(first.parent_id, DRIVER_TAG, dead)
    third = tracker()
    assert third.resumed and third.parent_id == first.parent_id
    assert third.client.get_run(third.parent_id).data.tags[DRIVER_TAG] == process_identity()


def test_a_unit_being_trained_elsewhere_is_waited_for_and_reused(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path / "store")
    plan = Plan("ablate")
    unit = add_variant_fold(plan, RunConfig(), get_variant("A0"), 1, "hash", seed=0)
    trained, reports = [], []
    monkeypatch.setattr(execute, "_train", lambda *a: trained.append(a))
    holding = threading.Event()

    def other_sweep():
        with store.unit_lock(unit.key):
            holding.set()
            time.sleep(1.0)  # let run_unit reach the lock while this "sweep" is still training
            (store.unit_dir(unit.key)).mkdir(parents=True)
            (store.unit_dir(unit.key) / UNIT_RECORD).write_text('{"key": "%s", "metrics": {}}' % unit.key)

    thread = threading.Thread(target=other_sweep)
    thread.start()
    holding.wait()
    record = execute.run_unit(store, unit, reports.append)
    thread.join()
    assert trained == [] and record["key"] == unit.key
    assert reports == [{"done": 1, execute.REUSED: 1}]


def test_two_sweeps_at_once_share_units_and_both_finish(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(command("ablate", *SWEEP), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    assert len(completed_units(tmp_path / "clile_store")) == 3
    frame = runs(tmp_path, "clile-ablation")
    parents = frame[frame["tags.unit_key"].isna()]
    assert len(parents) == 2 and set(parents["status"]) == {"FINISHED"}  # the second did not take over the first
    children = unit_runs(frame)
    assert set(children["status"]) == {"FINISHED"}
    assert (children.groupby("tags.mlflow.parentRunId").size() == 3).all()  # each parent's table is complete
    trained = children[children["tags.reused_from"].isna()] if "tags.reused_from" in children else children
    assert trained["tags.unit_key"].value_counts().max() == 1  # no unit trained twice
    assert "database is locked" not in outputs[0][1] + outputs[1][1]


def _sigint_when(proc: subprocess.Popen, started: str) -> str:
    """SIGINT once the driver reports that the unit named ``started`` began training, as Ctrl-C in a terminal
    does: to the whole foreground process group. Returns the stderr read so far. The driver's own line is
    watched, not the store (a workspace's place is the store's business) nor MLflow (whose first reader
    would race the driver's schema migration)."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[sweep] start") and line.rstrip().endswith(started):
            break
    os.killpg(proc.pid, signal.SIGINT)
    return "".join(seen)


def test_ctrl_c_kills_parent_and_children_and_a_rerun_resumes_them(tmp_path):
    proc = subprocess.Popen(command("ablate", *INTERRUPTED), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            # a job started in the background by a shell inherits SIGINT ignored: undo that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    head = _sigint_when(proc, "stage I")
    _, rest = proc.communicate(timeout=120)
    err = head + rest
    assert proc.returncode == 130, err[-3000:]
    assert "KILLED; rerun the same command to resume" in err and "Traceback" not in err
    frame = runs(tmp_path, "clile-ablation")
    assert "RUNNING" not in set(frame["status"]) and "FAILED" not in set(frame["status"])
    assert frame[frame["tags.unit_key"].isna()].iloc[0]["status"] == "KILLED"
    assert "KILLED" in set(unit_runs(frame)["status"])  # the interrupted stage-I unit

    result = run(tmp_path, "ablate", *INTERRUPTED)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming unfinished parent run" in result.stderr
    frame = runs(tmp_path, "clile-ablation")
    parents = frame[frame["tags.unit_key"].isna()]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    finished = unit_runs(frame)[lambda f: f["status"] == "FINISHED"]
    assert sorted(finished["tags.stage"]) == ["stage0", "stage1", "stage2"]
    assert "| — |" not in main_table(result.stdout)
