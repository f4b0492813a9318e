"""The artifact store in object storage, against a real S3 API on loopback (moto's server mode): units
uploaded whole with their marker last, fetched once per node into its own scratch directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import command, free_port, main_table
from test_cluster import ray_cluster  # noqa: F401  (fixture)

from clile_core.config import RunConfig
from clile_core.variants import get_variant
from clile_core.names import UNIT_RECORD
from orchestrator.store import SCRATCH_ENV, ArtifactStore, StoreError
from orchestrator.units import Plan, add_variant_fold

pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")
BUCKET = "clile-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback with one bucket; yields a function making store URIs under it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
        client.create_bucket(Bucket=BUCKET)

        def uri(prefix: str, bucket: str = BUCKET) -> str:
            return f"s3://{bucket}/{prefix}?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"

        uri.client = client
        yield uri
    finally:
        server.kill()
        server.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _keys(s3, prefix: str) -> list[str]:
    listing = s3.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"][len(prefix) + 1:] for o in listing.get("Contents", []))


def _node(monkeypatch, tmp_path, name: str, uri: str) -> ArtifactStore:
    monkeypatch.setenv(SCRATCH_ENV, str(tmp_path / name))
    return ArtifactStore(uri)


def _unit():
    plan = Plan("ablate")
    return add_variant_fold(plan, RunConfig(), get_variant("A0"), 1, "hash", seed=0)


def test_a_unit_trained_on_one_node_is_fetched_by_another(s3, tmp_path, monkeypatch):
    uri = s3("roundtrip")
    unit = _unit()
    a = _node(monkeypatch, tmp_path, "a", uri)
    a.save_spec(unit)
    with a.workspace(unit) as work:
        (work / "weights.pt").write_bytes(b"w" * 1000)
        (work / "sub").mkdir()
        (work / "sub" / "x.txt").write_text("x")
        (work / UNIT_RECORD).write_text(json.dumps({"key": unit.key, "metrics": {"f1": 1.0}}))
    a.set_run_id(unit.key, "run-1")
    assert _keys(s3, "roundtrip/units") == [f"{unit.key}/sub/x.txt", f"{unit.key}/{UNIT_RECORD}", f"{unit.key}/weights.pt"]

    b = _node(monkeypatch, tmp_path, "b", uri)
    assert b.root != a.root and not (b.root / "units" / unit.key).exists()
    assert b.is_complete(unit.key) and b.load_spec(unit.key).key == unit.key
    assert b.record(unit.key)["metrics"] == {"f1": 1.0} and b.trained_run_id(unit.key) == "run-1"
    assert (b.unit_dir(unit.key) / "weights.pt").read_bytes() == b"w" * 1000  # fetched into b's scratch
    assert (tmp_path / "b").exists() and (b.root / "units" / unit.key / "sub" / "x.txt").exists()


def test_the_complete_marker_is_uploaded_last_and_a_failed_unit_not_at_all(s3, tmp_path, monkeypatch):
    uri = s3("order")
    store = _node(monkeypatch, tmp_path, "a", uri)
    written, real = [], store.remote.fs

    class Recording:
        def open_output_stream(self, path):
            written.append(path.rsplit("/", 1)[-1])
            return real.open_output_stream(path)

        def __getattr__(self, name):
            return getattr(real, name)

    unit = _unit()
    monkeypatch.setattr(store.remote, "fs", Recording())
    with store.workspace(unit) as work:
        (work / UNIT_RECORD).write_text("{}")  # written first locally: must still go up last
        for name in ("a.pt", "z.pt", "model.json"):
            (work / name).write_text(name)
    assert written[-1] == UNIT_RECORD and sorted(written) == sorted(["a.pt", "z.pt", "model.json", UNIT_RECORD])

    other = Plan("ablate")
    failing = add_variant_fold(other, RunConfig(), get_variant("A0"), 2, "hash", seed=0)
    with pytest.raises(RuntimeError):
        with store.workspace(failing) as work:
            (work / "half.pt").write_text("half")
            raise RuntimeError("disk full")
    assert not store.is_complete(failing.key) and _keys(s3, f"order/units/{failing.key}") == []


def test_feature_cache_is_published_once_and_fetched_once_per_node(s3, tmp_path, monkeypatch):
    uri = s3("features")
    a = _node(monkeypatch, tmp_path, "a", uri)
    entry = a.features_dir / "k1"
    entry.mkdir(parents=True)
    (entry / "centre.pt").write_bytes(b"c")
    (entry / "meta.json").write_text("{}")
    a.publish_features("k1")
    assert _keys(s3, "features/features") == ["k1/centre.pt", "k1/meta.json"]
    b = _node(monkeypatch, tmp_path, "b", uri)
    b.fetch_features("k1")
    assert (b.features_dir / "k1" / "centre.pt").read_bytes() == b"c"
    (b.features_dir / "k1" / "centre.pt").write_bytes(b"local")
    b.fetch_features("k1")  # already here: not fetched again
    assert (b.features_dir / "k1" / "centre.pt").read_bytes() == b"local"


def test_a_missing_bucket_is_refused_before_anything_starts(s3, tmp_path, monkeypatch):
    store = _node(monkeypatch, tmp_path, "a", s3("x", bucket="no-such-bucket"))
    with pytest.raises(StoreError, match="cannot write there"):
        store.check_writable()


def test_sweep_on_object_storage_is_reused_from_another_scratch_dir(s3, tmp_path):
    uri = s3("sweep")
    sweep = ("--folds", "1", "--variants", "A0", "CL-ILE", "--store", uri)
    env = {**os.environ, **CREDENTIALS, "PYTHONUNBUFFERED": "1"}
    first = subprocess.run(command("ablate", *sweep), cwd=tmp_path, capture_output=True, text=True, timeout=600,
                           env={**env, SCRATCH_ENV: str(tmp_path / "node-a")})
    assert first.returncode == 0, first.stderr[-3000:]
    units = {k.split("/")[0] for k in _keys(s3, "sweep/units")}
    assert len(units) == 3 and all(f"{u}/{UNIT_RECORD}" in _keys(s3, "sweep/units") for u in units)
    assert any(k.endswith("/meta.json") for k in _keys(s3, "sweep/features"))
    second = subprocess.run(command("ablate", *sweep), cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**env, SCRATCH_ENV: str(tmp_path / "node-b")})
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reused 3 unit(s), trained 0" in second.stderr
    assert "| CL-ILE |" in second.stdout and "| — |" not in main_table(second.stdout)


@pytest.mark.cluster
@pytest.mark.skipif(not Path(sys.executable).with_name("ray").exists(), reason="no ray CLI beside the interpreter")
def test_two_node_cluster_shares_only_the_bucket(s3, ray_cluster, tmp_path):
    """Two Ray nodes on loopback, each with its own scratch directory: units trained on one node are
    fetched from the bucket by the other; the driver has a third scratch directory."""
    uri = s3("cluster")
    env = {**ray_cluster.env, SCRATCH_ENV: str(tmp_path / "driver-scratch")}
    proc = subprocess.run(command("ablate", "--address", ray_cluster.address, "--folds", "1", "2",
                                  "--variants", "A0", "CL-ILE", "--store", uri),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "cluster: 2 CPU" in proc.stderr
    in_bucket = {k.split("/")[0] for k in _keys(s3, "cluster/units") if k.endswith(f"/{UNIT_RECORD}")}
    assert len(in_bucket) == 6
    scratch = ray_cluster.temp_dirs["head"].parent
    on_nodes = {node: {p.parent.name for p in (scratch / node).glob(f"*/units/*/{UNIT_RECORD}")}
                for node in ("scratch-h", "scratch-w")}
    assert all(on_nodes.values()), on_nodes  # both nodes trained (or fetched) units
    assert set().union(*on_nodes.values()) <= in_bucket
    assert "| — |" not in main_table(proc.stdout)


def test_two_nodes_sharing_only_the_bucket_train_a_unit_once(s3, tmp_path, monkeypatch):
    """Two sweeps on two nodes (each its own scratch directory, so its own lock files) ask for the same
    unit at once: the bucket's lease lets one train it; the other waits, then reuses it."""
    import threading

    from orchestrator import execute

    uri = s3("two-nodes")
    unit = _unit()
    nodes = {name: _node(monkeypatch, tmp_path, name, uri) for name in ("a", "b")}
    trained, reports = [], {name: [] for name in nodes}

    def fake_train(store, unit, report):  # stands in for training: slow enough for the other node to ask meanwhile
        trained.append(store.root)
        with store.workspace(unit) as work:
            time.sleep(1.5)
            (work / UNIT_RECORD).write_text(json.dumps({"key": unit.key, "metrics": {}}))
        return store.record(unit.key)

    monkeypatch.setattr(execute, "_train", fake_train)
    threads = [threading.Thread(target=execute.run_unit, args=(store, unit, reports[name].append))
               for name, store in nodes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(trained) == 1, trained
    assert sorted(map(len, reports.values())) == [0, 1] and [execute.REUSED in r[0] for r in reports.values() if r] == [True]
    assert [k for k in _keys(s3, "two-nodes/locks") if k] == []  # released (pyarrow may leave a folder marker)


def test_a_dead_holders_lease_expires_and_is_taken_over(s3, tmp_path, monkeypatch):
    from orchestrator.store import RemoteLease

    store = _node(monkeypatch, tmp_path, "a", s3("lease"))
    store.remote.write_text("locks/k.json", json.dumps({"token": "killed-node:1:x", "expires": time.time() + 2}))
    started = time.monotonic()
    with RemoteLease(store.remote, "locks/k.json", lease=30, settle=0.2, poll=0.1) as lease:
        waited = time.monotonic() - started
        assert json.loads(store.remote.read_text("locks/k.json"))["token"] == lease.token
    assert 1.5 < waited < 10  # waited for the expiry, not forever
    assert store.remote.read_text("locks/k.json") is None
