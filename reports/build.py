"""``python -m reports.build``: a sweep's tables and summary figures from its MLflow runs, written to a folder
and logged back to the parent run. Each unit's own figures (curves, Fig. 3, Fig. 4) are not drawn here:
its trial drew them when it completed (``reports.figures.unit_figures``), and they are on its run.

Rebuilding overwrites the same files and artifacts, so it can run any number of times.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric

from clile_core.variants import load_variants
from orchestrator.tracking import default_tracking_uri
from reports import collect, figures, published
from reports.formats import to_markdown, ui_frame, write_all
from reports.tables import (Summary, Table, ablation_table, backbones_table, comparison_table, identity_table,
                           paired_differences, summarise)

MAIN_TABLE = {"ablate": "ablation", "backbones": "backbones"}  # other commands: the comparison table
ABLATION_BASELINE = "A0"  # Table 3's rows are read as differences to stage 0 alone
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI, rendered as Markdown


def row_metric(row: str) -> str:
    """The parent run's metric for a table row's mean test F1, e.g. ``f1_avg.CL-ILE``; characters MLflow
    refuses in metric names become ``_``."""
    return "f1_avg." + re.sub(r"[^\w\-. /:]", "_", row)


@dataclass
class Report:
    parent_id: str
    command: str
    out_dir: Path
    tables: dict[str, Table]
    test: Summary  # per row, over folds, of the test F1s
    cells: pd.DataFrame  # one row per (table row, fold): the run that answers it and its test F1s
    files: list[Path] = field(default_factory=list)

    @property
    def main(self) -> Table:
        return self.tables[MAIN_TABLE.get(self.command, "comparison")]

    def markdown(self) -> str:
        """The command's table, and the identity diagnostics beside Table 3, as the terminal and MLflow show them."""
        shown = [self.main] + ([self.tables["identity"]] if "identity" in self.tables else [])
        return "\n".join(to_markdown(table) for table in shown)


def _tag(run: pd.Series, name: str, default: str = "") -> str:
    value = run.get(f"tags.{name}")
    return value if isinstance(value, str) else default


def _rows(units: pd.DataFrame, command: str) -> list[str]:
    """Table rows in the paper's order for ablations (the variants file's), else in the order they ran."""
    rows = collect.row_names(units)
    if command == "ablate":
        order = {name: i for i, name in enumerate(load_variants())}
        rows.sort(key=lambda row: order.get(row, len(order)))
    return rows


def _total_folds(parent: pd.Series, units: pd.DataFrame) -> int:
    folds, seeds = parent.get("params.folds"), parent.get("params.seeds")
    if isinstance(folds, str) and folds.split():
        return len(folds.split()) * (len(seeds.split()) if isinstance(seeds, str) and seeds.split() else 1)
    return int(units["tags.fold"].nunique()) if len(units) and "tags.fold" in units else 0


def _tables(command: str, dataset: str, units: pd.DataFrame, test_cells: pd.DataFrame, test: Summary, rows: list[str],
            au_names: list[str], total_folds: int, comparison: published.Comparison | None) -> dict[str, Table]:
    tables = {"comparison": comparison_table(test, au_names, total_folds, comparison)}
    if command == "ablate":
        differences = paired_differences(test_cells, rows, ABLATION_BASELINE)
        tables["ablation"] = ablation_table(test, load_variants(), total_folds, published.ablation(), dataset,
                                            differences, ABLATION_BASELINE)
        tables["identity"] = identity_table(collect.metric_cells(units, ""), rows)
    elif command == "backbones" and rows:
        differences = paired_differences(test_cells, rows, rows[0])
        tables["backbones"] = backbones_table(test, total_folds, published.backbones(), dataset, differences, rows[0])
    return tables


def log_ui_table(client: MlflowClient, run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
    """``log_table`` for the UI's table view, replacing rather than appending to an earlier build's table
    (``MlflowClient.log_table`` appends to an existing file)."""
    folder = str(Path(artifact_file).parent)
    if artifact_file not in {a.path for a in client.list_artifacts(run_id, folder)}:
        client.log_table(run_id, frame, artifact_file)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_json(path, orient="split", index=False, date_format="iso")  # log_table's own layout
        client.log_artifact(run_id, str(path), folder)


def summary_figures(test: Summary, seen: Summary, au_names: list[str], comparison: published.Comparison | None,
                    out_dir: Path) -> list[Path]:
    paper = {}
    if comparison is not None:
        paper = {str(m): comparison.frame.loc[m, [*au_names, "avg"]].to_list()
                 for m in comparison.frame.index if str(m).startswith("CL-ILE")}
    note = comparison.note if comparison is not None else "no published per-AU table for this dataset / AU set"
    paths = figures.save(figures.f1_bars(test, au_names, paper, note), out_dir, "f1_vs_paper")
    return paths + figures.save(figures.seen_vs_unseen(test, seen), out_dir, "seen_vs_unseen")


def build(client: MlflowClient, experiment_id: str, parent_id: str | None = None, out_dir: Path | None = None,
          rows: list[str] | None = None, au_names: list[str] | None = None, total_folds: int | None = None,
          log: bool = True) -> Report:
    """Tables and summary figures of one sweep. ``rows``/``au_names``/``total_folds`` default to what the runs hold;
    a driver passes its own so rows whose units never started still show, as missing."""
    # a progress bar per small downloaded file would drown the printed table in the driver's output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parent = collect.parent_run(experiment_id, parent_id)
    parent_id = parent["run_id"]
    units = collect.unit_runs(experiment_id, parent_id)
    command, dataset = _tag(parent, "command"), _tag(parent, "dataset")
    au_names = au_names or collect.au_names(units)
    rows = rows or _rows(units, command)
    total_folds = total_folds or _total_folds(parent, units)
    out_dir = Path(out_dir or Path("reports_out") / parent_id)
    cells = collect.cells(units, "test")
    test = summarise(cells, rows, au_names)
    seen = summarise(collect.cells(units, "seen"), rows, au_names)
    comparison = published.comparison(dataset, au_names)
    report = Report(parent_id, command, out_dir, _tables(command, dataset, units, cells, test, rows, au_names,
                                                        total_folds, comparison), test, cells)

    for table in report.tables.values():
        paths = write_all(table, out_dir / "tables")
        report.files += paths
        if log:
            for path in paths:
                client.log_artifact(parent_id, str(path), "tables")
            log_ui_table(client, parent_id, ui_frame(table), f"tables/{table.name}.json")
    if log:  # the runs table compares sweeps by these; the parent's description shows the table itself
        client.set_tag(parent_id, NOTE_TAG, report.markdown())
        means = test.mean["avg"].dropna()
        if len(means):
            client.log_batch(parent_id, metrics=[Metric(row_metric(row), float(v), int(time.time() * 1000), 0)
                                                 for row, v in means.items()])
    paths = summary_figures(test, seen, au_names, comparison, out_dir / "figures")
    report.files += paths
    if log:
        for path in paths:
            client.log_artifact(parent_id, str(path), "figures")

    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__)
    parser.add_argument("--experiment", required=True, help="MLflow experiment name, e.g. clile-ablation")
    parser.add_argument("--parent", default=None, help="parent run id (default: the experiment's newest)")
    parser.add_argument("--out", default=None, help="output folder (default: reports_out/<parent run id>/)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow URI (default: sqlite:///<cwd>/mlflow.db)")
    parser.add_argument("--no-log", action="store_true", help="only write files; log nothing to MLflow")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"error: no experiment {args.experiment!r} at {uri}", file=sys.stderr)
        return 2
    try:
        report = build(client, experiment.experiment_id, args.parent, Path(args.out) if args.out else None,
                       log=not args.no_log)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for table in report.tables.values():
        print(to_markdown(table))
    print(f"{len(report.files)} files in {report.out_dir}" + ("" if args.no_log else f"; logged to run {report.parent_id}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
