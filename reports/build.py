"""``python -m reports.build``: a sweep's tables and summary figures from its MLflow runs, written to a folder
and logged back to the parent run. Each unit's own figures (curves, Fig. 3, Fig. 4) are not drawn here:
its trial drew them when it completed (``reports.figures.unit_figures``), and they are on its run.

Rebuilding overwrites the same files and artifacts, so it can run any number of times.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from clile_core.log import get_logger
from clile_core.names import (AVG, COMMAND_TAG, DATASET_TAG, F1_FIGURE, FOLD_TAG, SEEN, SEEN_UNSEEN_FIGURE, TABLES_DIR,
                              TEST, UNIT_FIGURES, default_tracking_uri, row_metric)
from clile_core.variants import load_variants
from reports import collect, figures, published
from reports.formats import to_markdown, ui_frame, write_all
from reports.tables import (Summary, Table, ablation_table, backbones_table, comparison_table, identity_table,
                           paired_differences, summarise)

MAIN_TABLE = {"ablate": "ablation", "backbones": "backbones"}  # other commands: the comparison table
ABLATION_BASELINE = "A0"  # Table 3's rows are read as differences to stage 0 alone

logger = get_logger("reports")  # not `log`: build() has a parameter of that name


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
    fold = f"tags.{FOLD_TAG}"
    return int(units[fold].nunique()) if len(units) and fold in units else 0


def _tables(command: str, *, dataset: str, units: pd.DataFrame, test_cells: pd.DataFrame, test: Summary,
            rows: list[str], au_names: list[str], total_folds: int,
            comparison: published.Comparison | None) -> dict[str, Table]:
    tables = {"comparison": comparison_table(test, au_names, total_folds, comparison)}
    if command == "ablate":
        differences = paired_differences(test_cells, rows, ABLATION_BASELINE)
        tables["ablation"] = ablation_table(test, variants=load_variants(), total_folds=total_folds,
                                            paper=published.ablation(), dataset=dataset, differences=differences,
                                            baseline=ABLATION_BASELINE)
        tables["identity"] = identity_table(collect.metric_cells(units, ""), rows)
    elif command == "backbones" and rows:
        differences = paired_differences(test_cells, rows, rows[0])
        tables["backbones"] = backbones_table(test, total_folds=total_folds, paper=published.backbones(),
                                              dataset=dataset, differences=differences, baseline=rows[0])
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


def summary_figures(test: Summary, *, seen: Summary, au_names: list[str], comparison: published.Comparison | None,
                    out_dir: Path) -> list[Path]:
    paper = {}
    if comparison is not None:
        paper = {str(m): comparison.frame.loc[m, [*au_names, AVG]].to_list()
                 for m in comparison.frame.index if str(m).startswith("CL-ILE")}
    note = comparison.note if comparison is not None else "no published per-AU table for this dataset / AU set"
    paths = figures.save(figures.f1_bars(test, au_names, paper, note), out_dir, F1_FIGURE)
    return paths + figures.save(figures.seen_vs_unseen(test, seen), out_dir, SEEN_UNSEEN_FIGURE)


def build(client: MlflowClient, experiment_id: str, *, parent_id: str | None = None, out_dir: Path | None = None,
          rows: list[str] | None = None, au_names: list[str] | None = None, total_folds: int | None = None,
          log: bool = True) -> Report:
    """Tables and summary figures of one sweep. ``rows``/``au_names``/``total_folds`` default to what the runs hold;
    a driver passes its own so rows whose units never started still show, as missing."""
    # a progress bar per small downloaded file would drown the printed table in the driver's output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parent = collect.parent_run(client, experiment_id, parent_id)
    parent_id = parent["run_id"]
    units = collect.unit_runs(client, experiment_id, parent_id)
    command, dataset = _tag(parent, COMMAND_TAG), _tag(parent, DATASET_TAG)
    au_names = au_names or collect.au_names(units)
    rows = rows or _rows(units, command)
    total_folds = total_folds or _total_folds(parent, units)
    out_dir = Path(out_dir or Path("reports_out") / parent_id)
    cells = collect.cells(units, TEST)
    test = summarise(cells, rows, au_names)
    seen = summarise(collect.cells(units, SEEN), rows, au_names)
    comparison = published.comparison(dataset, au_names)
    tables = _tables(command, dataset=dataset, units=units, test_cells=cells, test=test, rows=rows, au_names=au_names,
                     total_folds=total_folds, comparison=comparison)
    report = Report(parent_id, command, out_dir, tables, test, cells)

    for table in report.tables.values():
        paths = write_all(table, out_dir / TABLES_DIR)
        report.files += paths
        if log:
            for path in paths:
                client.log_artifact(parent_id, str(path), TABLES_DIR)
            log_ui_table(client, parent_id, ui_frame(table), f"{TABLES_DIR}/{table.name}.json")
    if log:  # the runs table compares sweeps by these; the parent's description shows the table itself
        client.set_tag(parent_id, MLFLOW_RUN_NOTE, report.markdown())
        means = test.mean[AVG].dropna()
        if len(means):
            client.log_batch(parent_id, metrics=[Metric(row_metric(row), float(v), int(time.time() * 1000), 0)
                                                 for row, v in means.items()])
    paths = summary_figures(test, seen=seen, au_names=au_names, comparison=comparison, out_dir=out_dir / UNIT_FIGURES)
    report.files += paths
    if log:
        for path in paths:
            client.log_artifact(parent_id, str(path), UNIT_FIGURES)

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
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        logger.error(f"no experiment {args.experiment!r} at {uri}")
        return 2
    try:
        report = build(client, experiment.experiment_id, parent_id=args.parent,
                       out_dir=Path(args.out) if args.out else None, log=not args.no_log)
    except LookupError as exc:
        logger.error("%s", exc)
        return 2
    for table in report.tables.values():
        print(to_markdown(table))
    logger.info(f"{len(report.files)} files in {report.out_dir}" + ("" if args.no_log else f"; logged to run {report.parent_id}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
