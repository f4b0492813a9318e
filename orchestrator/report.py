"""The table a command prints at its end, built with ``reports.build`` from the MLflow runs it just recorded
(every table format and figure is also logged to the runs and written under ``reports_out/<parent run id>/``)."""

from __future__ import annotations

import sys

from orchestrator.cli import Context
from orchestrator.sweep import SweepOutcome
from orchestrator.tracking import SweepTracker
from reports.build import build
from reports.formats import to_markdown


def print_table(ctx: Context, title: str, rows: list[str], tracker: SweepTracker, outcome: SweepOutcome) -> str:
    report = build(tracker.client, tracker.experiment_id, tracker.parent_id, rows=rows, au_names=ctx.au_names,
                   total_folds=ctx.runs_per_row)
    text = f"{title}\n\n{to_markdown(report.main)}"
    if "identity" in report.tables:
        text += f"\n{to_markdown(report.tables['identity'])}"
    if outcome.failed or outcome.skipped:
        text += f"\n{len(outcome.failed)} unit(s) failed, {len(outcome.skipped)} skipped: their cells are missing (—) or count fewer folds.\n"
    print(text)
    print(f"[{ctx.args.experiment}] reused {len(outcome.reused)} unit(s), trained {len(outcome.completed)}; "
          f"tables and figures in {report.out_dir} and on parent run {tracker.parent_id}", file=sys.stderr)
    return text
