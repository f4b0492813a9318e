"""What a researcher finds in MLflow after a sweep: the parent's description, per-row metrics and dataset,
each unit's logged model, a registered model that `mlflow models serve` answers, and the UI's runs-table URL."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from sweep_helpers import free_port, run, runs, unit_runs, wait_for_http

from clile_core.names import (MLFLOW_MODEL, NOT_LOGGED, RESULT_JSON, STAGE1_FILE, UNIT_ARTIFACTS, UNIT_FIGURES,
                              UNIT_RECORD, WEIGHTS)
from orchestrator.tracking import SweepTracker
from orchestrator.ui import experiment_links

REGISTERED = "clile-au-test"


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("mlflow_views")
    # MLflow's global URI (inherited through the environment) names another store: the command must record and
    # register through its own, the default mlflow.db here
    elsewhere = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path_factory.mktemp('elsewhere') / 'mlflow.db'}"}
    result = run(cwd, "ablate", "--folds", "1", "--variants", "A0", "CL-ILE", "--register", REGISTERED, env=elsewhere)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"registered model '{REGISTERED}' version 1" in result.stderr
    assert [line for line in result.stderr.splitlines() if "not logged" in line] == []  # all named in clile_core.names
    return cwd


def _client(cwd: Path) -> MlflowClient:
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def test_parent_has_table_description_row_metrics_and_dataset(swept):
    client = _client(swept)
    frame = runs(swept, "clile-ablation")
    parent = client.get_run(frame[frame["tags.unit_key"].isna()].iloc[0]["run_id"])
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("### Ablation (Table 3)") and "| CL-ILE | ✓ | ✓ | ✓ | ✓ |" in note
    assert set(parent.data.metrics) == {"f1_avg.A0", "f1_avg.CL-ILE"}
    assert all(0 <= v <= 100 for v in parent.data.metrics.values())
    (dataset_input,) = parent.inputs.dataset_inputs
    dataset = dataset_input.dataset
    spec = json.loads((swept / "clile_store" / "specs" / f"{frame['tags.unit_key'].dropna().iloc[0]}.json").read_text())
    assert dataset.name == "synthetic" and dataset.digest == spec["manifest_hash"]  # the hash the unit keys carry
    assert json.loads(dataset.profile)["num_rows"] == 6 * 12  # subjects x frames of the tiny set


def test_units_that_predict_log_an_mlflow_model(swept):
    client = _client(swept)
    children = unit_runs(runs(swept, "clile-ablation"))
    for _, child in children.iterrows():
        outputs = client.get_run(child["run_id"]).outputs.model_outputs
        assert len(outputs) == (0 if child["tags.stage"] == "stage1" else 1)  # stage I predicts no AUs
        if outputs:
            model = client.get_logged_model(outputs[0].model_id)
            assert model.source_run_id == child["run_id"] and model.status == LoggedModelStatus.READY


def _artifacts(client: MlflowClient, run_id: str, folder: str = "") -> set[str]:
    """Every artifact file of the run, as paths relative to its root."""
    found = set()
    for item in client.list_artifacts(run_id, folder or None):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_every_file_a_unit_writes_is_logged_under_its_shared_name(swept):
    """The stages write, the orchestrator logs, under the names of ``clile_core.names``: a file renamed on one
    side only would leave its unit's folder without reaching its run."""
    client = _client(swept)
    children = unit_runs(runs(swept, "clile-ablation"))
    assert sorted(children["tags.stage"]) == ["stage0", "stage1", "stage2"]
    for _, child in children.iterrows():
        unit_dir = swept / "clile_store" / "units" / child["tags.unit_key"]
        written = {p.name for p in unit_dir.iterdir()}
        assert {RESULT_JSON, UNIT_RECORD, UNIT_FIGURES} <= written
        assert (STAGE1_FILE in written) == (child["tags.stage"] == "stage1")
        assert ({WEIGHTS, MLFLOW_MODEL} <= written) == (child["tags.stage"] != "stage1")
        assert written <= UNIT_ARTIFACTS.keys() | {UNIT_FIGURES, MLFLOW_MODEL} | NOT_LOGGED
        logged = _artifacts(client, child["run_id"])
        expected = {f"{UNIT_ARTIFACTS[name]}/{name}" for name in written & UNIT_ARTIFACTS.keys()}
        expected |= {f"{UNIT_FIGURES}/{p.name}" for p in (unit_dir / UNIT_FIGURES).iterdir()}
        assert expected - logged == set()  # (the run's listing also shows its logged model's files)


def test_a_file_without_a_shared_name_is_said_not_dropped(tmp_path, capsys):
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="exp", command="ablate",
                           dataset="synthetic", sweep_key="k", params={})
    run_id = tracker.start_child("unit", {}, {})
    unit_dir = tmp_path / "unit"
    unit_dir.mkdir()
    for name in (RESULT_JSON, WEIGHTS, "result_v2.json"):  # the last: a stage renamed a file, names.py did not
        (unit_dir / name).write_text("{}")
    capsys.readouterr()  # the store's creation may log (schema migrations): not ours
    tracker.finish_unit("k1", {"metrics": {"test_f1_avg": 50.0}}, unit_dir=unit_dir, replay_history=False,
                        run_id=run_id)
    assert _artifacts(tracker.client, run_id) == {f"unit/{RESULT_JSON}", f"model/{WEIGHTS}"}
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[tracking] ")]
    assert line.endswith("result_v2.json: not logged to run " + run_id
                                                             + " (a file no name in clile_core.names describes)")


def test_registered_model_is_served_and_answers_an_image(swept):
    _client(swept)
    port = free_port()
    image = next((Path(__file__).resolve().parents[1] / "data" / "synthetic").rglob("*.png"))  # TINY's set
    # the scoring server runs `uvicorn` from PATH: the venv's bin, as when the venv is activated
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{swept / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{REGISTERED}/1",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], cwd=swept, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/ping", server)
        body = json.dumps({"dataframe_split": {"columns": ["image"],
                                               "data": [[base64.b64encode(image.read_bytes()).decode()]]}}).encode()
        request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    (row,) = answer["predictions"]
    assert list(row)[:3] == ["AU1", "AU2", "AU4"] and len(row) == 12
    assert all(0.0 <= p <= 1.0 for p in row.values())


def test_ui_prints_the_runs_table_url(swept):
    client = _client(swept)
    experiment = client.get_experiment_by_name("clile-ablation")
    links = experiment_links(f"sqlite:///{swept / 'mlflow.db'}", "http://127.0.0.1:5000")
    assert links == [f"  clile-ablation: http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}"
                     "?workflowType=machine_learning"]

