"""The table a command prints at its end, built with ``reports.build`` from the MLflow runs it just recorded
(every table format and figure is also logged to the runs and written under ``reports_out/<parent run id>/``),
and, with ``--register NAME``, the best row's model in the Model Registry."""

from __future__ import annotations

import time

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

from clile_core.log import get_logger
from clile_core.names import AVG, REUSED_FROM_TAG, TEST_F1_AVG
from orchestrator.cli import Context
from orchestrator.sweep import SweepOutcome
from orchestrator.tracking import SweepTracker
from reports.build import Report, build

log = get_logger("report")


def _logged_model(tracker: SweepTracker, run_id: str) -> str | None:
    """The logged model of a unit's run, or of the run that trained it when this sweep reused the unit."""
    run = tracker.client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    if outputs:
        return outputs[0].model_id
    trained = run.data.tags.get(REUSED_FROM_TAG)
    return _logged_model(tracker, trained) if trained and trained != "unknown" else None


def register_best(tracker: SweepTracker, report: Report, name: str) -> str:
    """Register, as a new version of ``name``, the model of the best row (mean test F1) — its fold with the
    best test F1 — and say which it is."""
    means = report.test.mean[AVG].dropna()
    if not len(means):
        return f"--register {name}: no row has a finished unit; nothing registered"
    row = str(means.idxmax())
    cell = report.cells[report.cells["row"] == row].sort_values(AVG).iloc[-1]
    model_id = _logged_model(tracker, cell["run_id"])
    if model_id is None:
        return f"--register {name}: row {row} fold {cell['fold']} (run {cell['run_id']}) has no logged model"
    # Through the sweep's own client (its registry is its tracking store), never MLflow's global URI: the
    # registry resolves a models:/<id> source through the global URI, so the version is given the logged
    # model's location and run directly.
    try:
        tracker.client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
            raise
    model = tracker.client.get_logged_model(model_id)
    version = tracker.client.create_model_version(
        name, model.artifact_location, run_id=model.source_run_id, model_id=model_id,
        tags={"row": row, "fold": str(cell["fold"]), TEST_F1_AVG: f"{cell[AVG]:.2f}", "sweep_run": tracker.parent_id})
    return (f"registered model '{name}' version {version.version}: row {row}, fold {cell['fold']} "
            f"(test F1 {cell[AVG]:.1f}); serve it with: mlflow models serve -m models:/{name}/{version.version} "
            f"--env-manager local")


def print_table(ctx: Context, title: str, *, rows: list[str], tracker: SweepTracker, outcome: SweepOutcome) -> str:
    started = time.time()
    report = build(tracker.client, tracker.experiment_id, parent_id=tracker.parent_id, rows=rows,
                   au_names=ctx.au_names, total_folds=ctx.runs_per_row)
    log.info(f"timing: report phase {time.time() - started:.1f}s (tables and summary figures)")
    text = f"{title}\n\n{report.markdown()}"
    if outcome.failed or outcome.skipped:
        text += f"\n{len(outcome.failed)} unit(s) failed, {len(outcome.skipped)} skipped: their cells are missing (—) or count fewer folds.\n"
    print(text)
    log.info(f"{ctx.args.experiment}: reused {len(outcome.reused)} unit(s), trained {len(outcome.completed)}; "
             f"tables and figures in {report.out_dir} and on parent run {tracker.parent_id}")
    if ctx.args.register:
        log.info(f"{ctx.args.experiment}: {register_best(tracker, report, ctx.args.register)}")
    return text
