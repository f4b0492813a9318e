"""Read a sweep's runs from MLflow: its parent run, its unit runs, and one row per (table row, fold) cell."""

from __future__ import annotations

import re

import mlflow
import pandas as pd

from orchestrator.tracking import SWEEP_TAG


def parent_run(experiment_id: str, parent_id: str | None = None) -> pd.Series:
    """The parent run ``parent_id``, or the newest parent of the experiment."""
    runs = mlflow.search_runs([experiment_id], filter_string=f"tags.{SWEEP_TAG} != ''", output_format="pandas",
                              order_by=["attributes.start_time DESC"])
    if parent_id is not None:
        runs = runs[runs["run_id"] == parent_id] if len(runs) else runs
    if not len(runs):
        raise LookupError(f"no parent run {parent_id or '(any)'} in experiment {experiment_id}")
    return runs.iloc[0]


def unit_runs(experiment_id: str, parent_id: str) -> pd.DataFrame:
    """Every child run of the parent, whatever its status (failed ones make their rows show as missing)."""
    return mlflow.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
                              output_format="pandas", order_by=["attributes.start_time DESC"])


def _split_tag(value: object) -> list[str]:
    return [item for item in value.split(",") if item] if isinstance(value, str) else []


def row_names(units: pd.DataFrame) -> list[str]:
    """Table rows the units answer, in the order their first unit started."""
    if not len(units) or "tags.final_for" not in units:
        return []
    ordered = units.sort_values("start_time")["tags.final_for"]
    return list(dict.fromkeys(row for value in ordered for row in _split_tag(value)))


def au_names(units: pd.DataFrame) -> list[str]:
    """AU names from the test metrics, in numeric order (the datasets' and the paper's order)."""
    names = {c.removeprefix("metrics.test_f1_") for c in units.columns if re.fullmatch(r"metrics\.test_f1_AU\d+", c)}
    return sorted(names, key=lambda name: int(name[2:]))


CELL = ["row", "fold", "seed"]  # one table cell: a row's unit for one fold and seed


def _seed(run: pd.Series) -> int:
    value = run.get("tags.seed")
    return int(value) if isinstance(value, str) and value else 0  # runs from before seeds were tagged used seed 0


def metric_cells(units: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """One row per (row label, fold, seed) from FINISHED unit runs: ``row, fold, seed, run_id`` and every
    metric named ``<prefix><name>``, as column ``<name>``.

    A unit answers the rows in its ``final_for`` tag (a shared stage-0 unit can answer A0 and a backbone).
    Should a resumed sweep hold two finished runs for one cell, the newest counts.
    """
    prefix = f"metrics.{prefix}"
    records = []
    if len(units) and "tags.final_for" in units:
        finished = units[units["status"] == "FINISHED"].sort_values("start_time", ascending=False)
        for _, run in finished.iterrows():
            values = {c.removeprefix(prefix): run[c] for c in units.columns if c.startswith(prefix) and pd.notna(run[c])}
            for row in _split_tag(run["tags.final_for"]):
                records.append({"row": row, "fold": int(run["tags.fold"]), "seed": _seed(run), "run_id": run["run_id"],
                                **values})
    if not records:
        return pd.DataFrame(columns=[*CELL, "run_id"])
    return pd.DataFrame(records).drop_duplicates(CELL).reset_index(drop=True)


def cells(units: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """F1 cells of ``split``: ``row, fold, seed, run_id, AU1 … avg`` in percent."""
    return metric_cells(units, f"{split}_f1_")
