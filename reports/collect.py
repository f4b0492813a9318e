"""Read a sweep's runs from MLflow, through the client a caller hands in (never MLflow's global tracking URI):
its parent run, its unit runs, and one row per (table row, fold) cell."""

from __future__ import annotations

import re

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from clile_core.names import FINAL_FOR_TAG, FOLD_TAG, SEED_TAG, SWEEP_TAG, TEST, f1_metric

PAGE = 1000  # runs per request; more are fetched page by page


def _record(run: Run) -> dict[str, object]:
    """One run as a row laid out like ``mlflow.search_runs``' frame (``tags.x``, ``metrics.x``, ``params.x``)."""
    return {"run_id": run.info.run_id, "status": run.info.status,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
            **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
            **{f"params.{k}": v for k, v in run.data.params.items()},
            **{f"tags.{k}": v for k, v in run.data.tags.items()}}


def search(client: MlflowClient, experiment_id: str, filter_string: str) -> pd.DataFrame:
    """Every run of the experiment that ``filter_string`` selects, newest first, one row per run."""
    records, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=PAGE,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        records += [_record(run) for run in page]
        token = page.token
        if not token:
            break
    return pd.DataFrame(records, columns=None if records else ["run_id", "status", "start_time"])


def parent_run(client: MlflowClient, experiment_id: str, parent_id: str | None = None) -> pd.Series:
    """The parent run ``parent_id``, or the newest parent of the experiment."""
    runs = search(client, experiment_id, f"tags.{SWEEP_TAG} != ''")
    if parent_id is not None:
        runs = runs[runs["run_id"] == parent_id]
    if not len(runs):
        raise LookupError(f"no parent run {parent_id or '(any)'} in experiment {experiment_id}")
    return runs.iloc[0]


def unit_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> pd.DataFrame:
    """Every child run of the parent, whatever its status (failed ones make their rows show as missing)."""
    return search(client, experiment_id, f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_id}'")


def _split_tag(value: object) -> list[str]:
    return [item for item in value.split(",") if item] if isinstance(value, str) else []


_FINAL_FOR, _FOLD, _SEED = (f"tags.{tag}" for tag in (FINAL_FOR_TAG, FOLD_TAG, SEED_TAG))


def row_names(units: pd.DataFrame) -> list[str]:
    """Table rows the units answer, in the order their first unit started."""
    if not len(units) or _FINAL_FOR not in units:
        return []
    ordered = units.sort_values("start_time")[_FINAL_FOR]
    return list(dict.fromkeys(row for value in ordered for row in _split_tag(value)))


def au_names(units: pd.DataFrame) -> list[str]:
    """AU names from the test metrics, in numeric order (the datasets' and the paper's order)."""
    prefix = f"metrics.{f1_metric(TEST, '')}"
    names = {c.removeprefix(prefix) for c in units.columns if re.fullmatch(re.escape(prefix) + r"AU\d+", c)}
    return sorted(names, key=lambda name: int(name[2:]))


CELL = ["row", "fold", "seed"]  # one table cell: a row's unit for one fold and seed


def _seed(run: pd.Series) -> int:
    value = run.get(_SEED)
    return int(value) if isinstance(value, str) and value else 0  # runs from before seeds were tagged used seed 0


def metric_cells(units: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """One row per (row label, fold, seed) from FINISHED unit runs: ``row, fold, seed, run_id`` and every
    metric named ``<prefix><name>``, as column ``<name>``.

    A unit answers the rows in its ``final_for`` tag (a shared stage-0 unit can answer A0 and a backbone).
    Should a resumed sweep hold two finished runs for one cell, the newest counts.
    """
    prefix = f"metrics.{prefix}"
    records = []
    if len(units) and _FINAL_FOR in units:
        finished = units[units["status"] == "FINISHED"].sort_values("start_time", ascending=False)
        for _, run in finished.iterrows():
            values = {c.removeprefix(prefix): run[c] for c in units.columns if c.startswith(prefix) and pd.notna(run[c])}
            for row in _split_tag(run[_FINAL_FOR]):
                records.append({"row": row, "fold": int(run[_FOLD]), "seed": _seed(run), "run_id": run["run_id"],
                                **values})
    if not records:
        return pd.DataFrame(columns=[*CELL, "run_id"])
    return pd.DataFrame(records).drop_duplicates(CELL).reset_index(drop=True)


def cells(units: pd.DataFrame, split: str = TEST) -> pd.DataFrame:
    """F1 cells of ``split``: ``row, fold, seed, run_id, AU1 … avg`` in percent."""
    return metric_cells(units, f1_metric(split, ""))
