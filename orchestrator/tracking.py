"""MLflow for a sweep: one parent run per command invocation, one child run per unit.

Only the driver writes to MLflow (trials report to it through Ray Tune), so an SQLite store has a
single writer and worker nodes of a cluster need no access to the tracking server.
"""

from __future__ import annotations

import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import (DatasetInput, InputTag, LoggedModelOutput, LoggedModelStatus, Metric, Param,
                             RunStatus)
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

import clile_core
from clile_core.config import flatten
from clile_core.data.manifest import read_manifest
from clile_core.log import get_logger
from clile_core.names import (BACKBONE_TAG, CODE_VERSION_TAG, COMMAND_TAG, DATASET_TAG, DRIVER_TAG, ERROR_TAG,
                              FINAL_FOR_TAG, FOLD_TAG, MLFLOW_MODEL, NOT_LOGGED, REUSED_FROM_TAG, SEED_TAG, STAGE_TAG,
                              SWEEP_TAG, TRAIN_PREFIX, TRAIN_SECONDS, UNIT_ARTIFACTS, UNIT_FIGURES, UNIT_TAG,
                              VARIANT_TAG)
from orchestrator.liveness import is_gone, process_identity
from orchestrator.units import Unit

# What a stage reports per epoch; Ray adds its own bookkeeping (pid, timestamp, …) that is not ours to log.
EPOCH_METRIC_PREFIXES = (TRAIN_PREFIX, "val_", "lr", "epoch_seconds")
MLMODEL = "MLmodel"  # MLflow's own descriptor file: present once a model folder is complete

log = get_logger("tracking")


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{clile_core.__version__}+{sha}" if sha else clile_core.__version__


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Get or create ``name``; with SQLite its artifacts live beside the database, not in ./mlruns."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


class SweepTracker:
    """The parent run of one command invocation and the child runs of its units."""

    def __init__(self, tracking_uri: str, *, experiment: str, command: str, dataset: str, sweep_key: str,
                 params: dict[str, Any]):
        self.client = MlflowClient(tracking_uri)
        self.experiment_id = experiment_id(self.client, experiment, tracking_uri)
        self.code_version = code_version()
        self.children: dict[str, str] = {}  # unit key -> run id, for children created by this tracker
        self.finished_units: set[str] = set()
        self.parent_id, self.resumed = self._parent(command, dataset, sweep_key, params)

    def _parent(self, command: str, dataset: str, sweep_key: str, params: dict[str, Any]) -> tuple[str, bool]:
        """Resume the unfinished parent of the same sweep whose driver is gone (after Ctrl-C or kill -9),
        else start one: a parent whose driver still runs belongs to a concurrent sweep."""
        previous = self.client.search_runs(
            [self.experiment_id], f"tags.{SWEEP_TAG} = '{sweep_key}' and attributes.status != 'FINISHED'",
            max_results=50, order_by=["attributes.start_time DESC"],
        )
        orphan = next((r for r in previous if is_gone(r.data.tags.get(DRIVER_TAG, ""))), None)
        if orphan is not None:
            parent_id = orphan.info.run_id
            self.client.set_tag(parent_id, DRIVER_TAG, process_identity())
            self.client.update_run(parent_id, status="RUNNING")
            self._settle_children(parent_id)
            return parent_id, True
        name = f"{command} · {dataset} · {time.strftime('%Y-%m-%d %H:%M:%S')}"
        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            SWEEP_TAG: sweep_key, COMMAND_TAG: command, DATASET_TAG: dataset, CODE_VERSION_TAG: self.code_version,
            DRIVER_TAG: process_identity()})
        self._log_params(run.info.run_id, params)
        return run.info.run_id, False

    def _settle_children(self, parent_id: str) -> None:
        """Children left RUNNING by a killed driver become KILLED; FINISHED ones count as done."""
        for child in self.client.search_runs([self.experiment_id], f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_id}'"):
            key = child.data.tags.get(UNIT_TAG)
            if child.info.status == "FINISHED" and key:
                self.finished_units.add(key)
            elif child.info.status == "RUNNING":
                self.client.set_terminated(child.info.run_id, "KILLED")

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for chunk in _chunks(items, 100):
            self.client.log_batch(run_id, params=chunk)

    def log_dataset(self, name: str, manifest: Path, digest: str) -> None:
        """The manifest the sweep trains on, as the parent run's input: the UI's Dataset column shows its
        name and digest (the manifest hash that unit keys carry), its page the source and row count."""
        frame = read_manifest(manifest)
        with warnings.catch_warnings():  # MLflow's hints (integer columns, two local-file source types) are not ours
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_pandas(frame, source=str(manifest), name=name, digest=digest)
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, "train")]
        self.client.log_inputs(self.parent_id, [DatasetInput(dataset._to_mlflow_entity(), tags)])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        stamp = _now_ms()
        items = [Metric(k, float(v), stamp, step) for k, v in metrics.items() if isinstance(v, (int, float))]
        for chunk in _chunks(items, 1000):
            self.client.log_batch(run_id, metrics=chunk)

    def start_child(self, name: str, tags: dict[str, str], params: dict[str, Any], parent_id: str | None = None) -> str:
        tags = {MLFLOW_PARENT_RUN_ID: parent_id or self.parent_id, CODE_VERSION_TAG: self.code_version, **tags}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def start_unit(self, unit: Unit, dataset: str, *, reused_from: str | None = None, parent_id: str | None = None) -> str:
        """A run for ``unit``: a child of the sweep, or nested under ``parent_id`` (a search trial)."""
        tags = {
            UNIT_TAG: unit.key, DATASET_TAG: dataset, FOLD_TAG: str(unit.fold), VARIANT_TAG: ",".join(unit.variants),
            FINAL_FOR_TAG: ",".join(unit.final_for), BACKBONE_TAG: unit.backbone, STAGE_TAG: unit.stage,
            SEED_TAG: str(unit.seed),
        }
        if reused_from:
            tags[REUSED_FROM_TAG] = reused_from
        run_id = self.start_child(unit.name(), tags, flatten(unit.run_config()), parent_id)
        if parent_id is None:  # only the sweep's own children answer its table
            self.children[unit.key] = run_id
        return run_id

    def log_epoch(self, unit_key: str, metrics: dict[str, Any]) -> None:
        run_id = self.children.get(unit_key)
        if run_id is not None and "epoch" in metrics:
            epoch = int(metrics["epoch"])
            self.log_metrics(run_id, {k: v for k, v in metrics.items() if k.startswith(EPOCH_METRIC_PREFIXES)}, step=epoch)

    def finish_unit(self, unit_key: str, record: dict[str, Any], *, unit_dir: Path | None, replay_history: bool,
                    run_id: str | None = None) -> None:
        """Final metrics (and, for a reused unit, its epoch history) and artifacts; then FINISHED.
        ``run_id`` names a run nested elsewhere; by default the unit's child of the sweep."""
        direct = run_id is None
        run_id = run_id or self.children[unit_key]
        if replay_history:
            for row in record.get("history", []):
                self.log_metrics(run_id, {k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        self.log_metrics(run_id, {**record["metrics"], TRAIN_SECONDS: record.get(TRAIN_SECONDS, 0.0)})
        if unit_dir is not None:
            self._log_unit_files(run_id, unit_dir)
        self.client.set_terminated(run_id, "FINISHED")
        if direct:
            self.finished_units.add(unit_key)

    def _log_unit_files(self, run_id: str, unit_dir: Path) -> None:
        """Every file the unit's stage wrote, each where ``clile_core.names`` puts it. A file of no known name is
        said, not skipped silently: a stage that renames a file must rename it in ``clile_core.names`` too."""
        for path in sorted(unit_dir.iterdir()):
            if path.name in UNIT_ARTIFACTS:
                self.client.log_artifact(run_id, str(path), UNIT_ARTIFACTS[path.name])
            elif path.name == UNIT_FIGURES:
                self.client.log_artifacts(run_id, str(path), UNIT_FIGURES)
            elif path.name == MLFLOW_MODEL:
                if (path / MLMODEL).exists():
                    self._log_model(run_id, path)
            elif path.name not in NOT_LOGGED:
                log.warning("%s: not logged to run %s (a file no name in clile_core.names describes)", path, run_id)

    def _log_model(self, run_id: str, model_dir: Path) -> None:
        """The MLflow model the trial saved, as the run's logged model (the UI's Models column; registrable)."""
        model = self.client.create_logged_model(self.experiment_id, name="model", source_run_id=run_id,
                                                tags={"flavor": "python_function"})
        self.client.log_model_artifacts(model.model_id, str(model_dir))
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])

    def fail_unit(self, unit_key: str, reason: str, status: str = "FAILED") -> None:
        run_id = self.children.get(unit_key)
        if run_id is None:
            return
        self.client.set_tag(run_id, ERROR_TAG, reason[:5000])
        self.client.set_terminated(run_id, status)

    def close(self, status: str) -> None:
        """End the parent and any child still open; nothing is left RUNNING."""
        for key, run_id in self.children.items():
            if key not in self.finished_units and self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, "FAILED" if status == "FINISHED" else status)
        self.client.set_terminated(self.parent_id, status)

    @staticmethod
    def status_for(exc: BaseException | None) -> str:
        if exc is None:
            return RunStatus.to_string(RunStatus.FINISHED)
        return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
