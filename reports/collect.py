"""Read a sweep's unit runs from MLflow into one row per (table row, fold) cell."""

from __future__ import annotations

import mlflow
import pandas as pd


def parent_runs(experiment_id: str) -> pd.DataFrame:
    runs = mlflow.search_runs([experiment_id], filter_string="tags.sweep_key != ''", output_format="pandas")
    return runs.sort_values("start_time", ascending=False) if len(runs) else runs


def unit_runs(experiment_id: str, parent_run_id: str) -> pd.DataFrame:
    return mlflow.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              output_format="pandas")


def cells(units: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per (row label, fold) from FINISHED unit runs: ``row, fold, AU1 … avg`` in percent.

    A unit answers the rows in its ``final_for`` tag (a shared stage-0 unit can answer A0 and a backbone).
    """
    prefix = f"metrics.{split}_f1_"
    records = []
    if not len(units) or "tags.final_for" not in units:
        return pd.DataFrame(columns=["row", "fold", "run_id"])
    for _, run in units[units["status"] == "FINISHED"].iterrows():
        final_for = run.get("tags.final_for")
        rows = [r for r in final_for.split(",") if r] if isinstance(final_for, str) else []
        values = {c.removeprefix(prefix): run[c] for c in units.columns if c.startswith(prefix) and pd.notna(run[c])}
        for row in rows:
            records.append({"row": row, "fold": int(run["tags.fold"]), "run_id": run["run_id"], **values})
    return pd.DataFrame(records)
