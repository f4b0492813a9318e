"""A real two-node Ray cluster on loopback, started with ``ray start`` and token authentication on,
running a tiny ``python -m orchestrator.ablate --address …`` sweep (slow: about a minute).

Deselect it with ``pytest -k 'not cluster'``. It cleans up after itself without ``ray stop`` (which
would stop every Ray process on the machine, other tests' local clusters included): each ``ray start
--block`` leads its own process group and shuts its node down on SIGTERM; anything left is killed by
process group, and then by its command line naming this test's private Ray temp dir.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sweep_helpers import free_port

RAY = Path(sys.executable).with_name("ray")
VARIANTS = ["A0", "CL-ILE"]
TINY = ["data.synthetic_subjects=6", "data.synthetic_frames=12", "data.synthetic_size=40", "data.input_size=32",
        "stage0.epochs=1", "stage1.epochs=1", "stage2.epochs=1", "model.dim=32", "model.heads=4", "model.ff_dim=64"]
NODES_SCRIPT = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(json.dumps([{"id": n["NodeID"], "alive": n["Alive"], "cpu": n["Resources"].get("CPU", 0),
                   "head": "node:__internal_head__" in n["Resources"]} for n in ray.nodes()]))
"""

pytestmark = [pytest.mark.cluster, pytest.mark.skipif(not RAY.exists(), reason=f"no ray CLI beside {sys.executable}")]



@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    temp_dirs: dict[str, Path]  # "head"/"worker" -> that node's Ray temp dir (its sessions and worker logs)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)  # "head"/"worker" -> its `ray start --block`
    # scratch dirs of the nodes ($CLILE_SCRATCH) are temp_dirs' parent / "scratch-h" and "scratch-w"

    def nodes(self, timeout: float = 60) -> list[dict]:
        """``ray.nodes()`` from a separate short driver (keeps Ray out of the pytest process)."""
        proc = subprocess.run([sys.executable, "-c", NODES_SCRIPT, self.address], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"ray.nodes() failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, count: int, timeout: float = 90) -> list[dict]:
        deadline, nodes, error = time.monotonic() + timeout, [], None
        while time.monotonic() < deadline:
            try:
                nodes = [n for n in self.nodes() if n["alive"]]
                if len(nodes) >= count:
                    return nodes
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                error = exc
            time.sleep(2)
        raise AssertionError(f"{count} alive node(s) expected within {timeout}s, got {nodes}; last error: {error}")


def _start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:  # the child keeps its own handle
        return subprocess.Popen([str(RAY), "start", "--block", "--disable-usage-stats", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _stop_node(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` then stops the processes of its node
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of its process group is left
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=10)


def _kill_stragglers(marker: str) -> list[int]:
    """SIGKILL processes (ours only) whose command line names this test's Ray temp dir."""
    import psutil

    killed = []
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            if proc.info["uids"] and proc.info["uids"].real == os.getuid() and marker in " ".join(proc.info["cmdline"] or []):
                proc.kill()
                killed.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return killed


@pytest.fixture
def ray_cluster(tmp_path):
    # Token auth: every `ray start` and every driver gets RAY_AUTH_MODE=token and the same token.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), PYTHONUNBUFFERED="1")
    # A short private temp dir: Ray's unix socket paths live under it and must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="clile-ray-", dir="/tmp"))
    temp_dirs = {"head": root / "h", "worker": root / "w"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=100000000"]
    cluster = Cluster(address, env, temp_dirs)
    procs: list[subprocess.Popen] = []
    try:
        # Each node its own scratch directory: with an object-storage store they share only the bucket.
        procs.append(_start_node(["--head", f"--port={port}", "--include-dashboard=false",
                                  f"--temp-dir={temp_dirs['head']}", *common],
                                 {**env, "CLILE_SCRATCH": str(root / "scratch-h")}, tmp_path / "ray-head.log"))
        cluster.wait_for_nodes(1)
        procs.append(_start_node([f"--address={address}", f"--temp-dir={temp_dirs['worker']}", *common],
                                 {**env, "CLILE_SCRATCH": str(root / "scratch-w")}, tmp_path / "ray-worker.log"))
        cluster.procs.update(head=procs[0], worker=procs[1])
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        for proc in reversed(procs):
            _stop_node(proc)
        _kill_stragglers(str(root))
        shutil.rmtree(root, ignore_errors=True)


def _pids_by_node(cluster: Cluster) -> dict[int, str]:
    """Ray worker pid -> the node that ran it, from the worker log names in each node's own temp dir."""
    owner = {}
    for node, temp in cluster.temp_dirs.items():
        for log in temp.glob("session_*/logs/worker-*.out"):
            match = re.search(r"-(\d+)\.out$", log.name)
            if match:
                owner[int(match.group(1))] = node
    return owner


def test_cluster_sweep_on_two_node_ray_cluster(ray_cluster, tmp_path):
    started = time.monotonic()
    nodes = ray_cluster.wait_for_nodes(2)
    assert len(nodes) == 2 and sum(n["head"] for n in nodes) == 1 and all(n["cpu"] == 1 for n in nodes), nodes

    # A driver without the token is refused: the cluster really runs with token authentication.
    no_token = {**ray_cluster.env, "RAY_AUTH_MODE": "disabled"}
    no_token.pop("RAY_AUTH_TOKEN")
    refused = subprocess.run([sys.executable, "-c", NODES_SCRIPT, ray_cluster.address], env=no_token,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0

    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "orchestrator.ablate", "--address", ray_cluster.address, "--dataset", "synthetic",
           "--folds", "1", "--variants", *VARIANTS, "--store", str(store)]
    for item in TINY:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=tmp_path, env=ray_cluster.env, capture_output=True, text=True, timeout=240)
    diagnostics = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, diagnostics
    assert "cluster: 2 CPU" in proc.stderr, diagnostics
    for variant in VARIANTS:
        assert re.search(rf"^\| {re.escape(variant)} \|.*\| 1/1 \|", proc.stdout, re.M), diagnostics  # 1 of 1 fold

    # Units: stage 0 (A0's answer, shared with CL-ILE), stage I and stage II (CL-ILE), each completed in the store.
    records = {p.parent.name: json.loads(p.read_text()) for p in (store / "units").glob("*/unit.json")}
    assert sorted(r["stage"] for r in records.values()) == ["stage0", "stage1", "stage2"], records.keys()
    assert all(r["key"] == key and r["host"] for key, r in records.items())

    # MLflow (the default SQLite store in the driver's cwd): one FINISHED child per unit, parent FINISHED.
    db = sqlite3.connect(tmp_path / "mlflow.db")
    try:
        children = db.execute(
            "SELECT t.value, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'unit_key' "
            "WHERE r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId')").fetchall()
        parents = db.execute("SELECT status FROM runs WHERE run_uuid NOT IN "
                             "(SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId')").fetchall()
    finally:
        db.close()
    assert sorted(children) == sorted((key, "FINISHED") for key in records), children
    assert parents == [("FINISHED",)]

    # The trials ran on the cluster: both nodes are still alive, and every trial's process is a Ray worker
    # of one of its two nodes (found by pid among each node's worker logs). Which node runs which trial is
    # the scheduler's choice (with one unit per stage, often the head for all), so it is not asserted.
    assert len(ray_cluster.wait_for_nodes(2)) == 2
    owner = _pids_by_node(ray_cluster)
    ran_on = {}
    for result in (store / "ray_results").glob("*/*/result.json"):
        lines = result.read_text().strip().splitlines()
        if lines:
            pid = json.loads(lines[-1])["pid"]
            ran_on[result.parent.parent.name + "/" + result.parent.name] = owner.get(pid, f"unknown pid {pid}")
    print("trials ran on:", ran_on)
    assert len(ran_on) == len(records), ran_on
    assert set(ran_on.values()) <= {"head", "worker"}, ran_on
    assert time.monotonic() - started < 240


def test_a_node_leaving_mid_sweep_leaves_its_units_to_the_other(ray_cluster, tmp_path):
    """Two folds, so both 1-CPU nodes train at once; the worker node is stopped (as `ray stop` on it would)
    while it trains a unit. The unit is retried on the head node; every unit is recorded once."""
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "orchestrator.ablate", "--address", ray_cluster.address, "--dataset", "synthetic",
           "--folds", "1", "2", "--variants", *VARIANTS, "--store", str(store), "--retries", "2"]
    for item in [*TINY, "stage1.epochs=400"]:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)  # keeps the pipe drained
    reader.start()
    victim, deadline = None, time.monotonic() + 300
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        on_worker = {pid for pid, node in _pids_by_node(ray_cluster).items() if node == "worker"}
        for owner in (store / "units").glob(".tmp-*/.owner.json"):
            try:
                if json.loads(owner.read_text())["pid"] in on_worker:
                    victim = owner.parent.name
            except (OSError, ValueError):  # being written, or its unit just finished
                pass
        time.sleep(0.2)
    assert victim, "".join(output)[-4000:]
    _stop_node(ray_cluster.procs["worker"])
    proc.wait(timeout=600)
    reader.join(timeout=10)
    text = "".join(output)
    assert proc.returncode == 0, text[-6000:]
    assert "failed; retry" in text, text[-6000:]
    assert len(ray_cluster.wait_for_nodes(1)) == 1
    records = {p.parent.name for p in (store / "units").glob("*/unit.json")}
    assert len(records) == 6  # per fold: stage 0 (A0's answer, shared with CL-ILE), stage I, stage II
    db = sqlite3.connect(tmp_path / "mlflow.db")
    try:
        children = db.execute(
            "SELECT t.value, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'unit_key' "
            "WHERE r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId')").fetchall()
    finally:
        db.close()
    assert sorted(children) == sorted((key, "FINISHED") for key in records), children
    for variant in VARIANTS:
        assert re.search(rf"^\| {re.escape(variant)} \|.*\| 2/2 \|", text, re.M), text[-6000:]
