"""The table a command prints at its end, built from the MLflow runs it just recorded."""

from __future__ import annotations

import sys

import mlflow

from orchestrator.cli import Context
from orchestrator.sweep import SweepOutcome
from orchestrator.tracking import SweepTracker
from reports.collect import cells, unit_runs
from reports.tables import summarise, to_markdown


def print_table(ctx: Context, title: str, rows: list[str], tracker: SweepTracker, outcome: SweepOutcome) -> str:
    units = unit_runs(tracker.experiment_id, tracker.parent_id)
    summary = summarise(cells(units), rows, ctx.au_names)
    table = to_markdown(summary, ctx.au_names, len(ctx.args.folds))
    text = f"{title} — test F1 (%) on unseen subjects, mean over folds\n\n{table}\n"
    if outcome.failed or outcome.skipped:
        text += f"\n{len(outcome.failed)} unit(s) failed, {len(outcome.skipped)} skipped: their cells are missing (—) or count fewer folds.\n"
    print(text)
    mlflow.MlflowClient(ctx.tracking_uri).log_text(tracker.parent_id, text, "tables/summary.md")
    print(f"[{ctx.args.experiment}] reused {len(outcome.reused)} unit(s), trained {len(outcome.completed)}", file=sys.stderr)
    return text
