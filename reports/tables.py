"""The paper's tables as format-neutral :class:`Table` objects: display text, best/second marks, and the
numbers behind them (for CSV). Rendering to Markdown, LaTeX, HTML lives in ``reports.formats``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clile_core.variants import Variant
from reports.published import Comparison

MISSING = "—"
YES, NO = "✓", "–"
BEST, SECOND = 1, 2


@dataclass(frozen=True)
class Summary:
    """Per table row, statistics over folds of each AU's F1 and the average (columns ``[*aus, "avg"]``)."""

    mean: pd.DataFrame
    std: pd.DataFrame  # population std over folds (0 with one fold)
    count: pd.DataFrame  # folds that gave the cell a value
    folds: pd.Series  # finished units per row


def summarise(cells: pd.DataFrame, rows: list[str], au_names: list[str]) -> Summary:
    """Rows in the given order; a row without finished units is all NaN with 0 folds, never zeros."""
    columns = [*au_names, "avg"]
    values = cells.reindex(columns=["row", *columns]).astype({c: float for c in columns})
    grouped = values.groupby("row")[columns]
    return Summary(
        mean=grouped.mean().reindex(rows),
        std=grouped.std(ddof=0).reindex(rows),
        count=grouped.count().reindex(rows).fillna(0).astype(int),
        folds=values.groupby("row").size().reindex(rows).fillna(0).astype(int),
    )


@dataclass
class Table:
    name: str  # file stem, e.g. "ablation"
    title: str
    header: list[str]
    rows: list[list[str]]  # display text, MISSING for absent values
    data: pd.DataFrame  # the numbers behind the display (NaN where missing), one row per display row
    ranks: dict[tuple[int, int], int] = field(default_factory=dict)  # (row, column) -> BEST or SECOND
    notes: list[str] = field(default_factory=list)


def fmt(value: float, digits: int = 1) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _mean_text(summary: Summary, row: str, column: str) -> str:
    """The fold mean, with the fold count appended when this cell has fewer folds than its row."""
    text = fmt(summary.mean.at[row, column])
    count, folds = int(summary.count.at[row, column]), int(summary.folds.at[row])
    return f"{text} ({count})" if text != MISSING and count < folds else text


def _mean_std_text(summary: Summary, row: str) -> str:
    """Mean ± std over folds; a single fold has no spread to show, so just its value."""
    if math.isnan(summary.mean.at[row, "avg"]) or summary.count.at[row, "avg"] < 2:
        return _mean_text(summary, row, "avg")
    return f"{summary.mean.at[row, 'avg']:.1f} ± {summary.std.at[row, 'avg']:.1f}"


def rank(values: list[float]) -> dict[int, int]:
    """Positions of the best and second-best distinct values (ties share a mark); NaN never ranks."""
    distinct = sorted({v for v in values if not math.isnan(v)}, reverse=True)
    marks = {}
    for mark, target in zip((BEST, SECOND), distinct):
        marks.update({i: mark for i, v in enumerate(values) if v == target})
    return marks


def _rank_columns(data: pd.DataFrame, columns: dict[str, int]) -> dict[tuple[int, int], int]:
    """Marks for ``data`` columns (name -> display column index), ranked as displayed (one decimal)."""
    ranks = {}
    for name, index in columns.items():
        ranks.update({(i, index): mark for i, mark in rank([round(float(v), 1) for v in data[name]]).items()})
    return ranks


def _folds_text(summary: Summary, row: str, total_folds: int) -> str:
    return f"{int(summary.folds.at[row])}/{total_folds}"


_FOLD_NOTE = ("Mean over folds of test F1 (%) on unseen subjects; folds = finished folds / folds run; "
              f"{MISSING} = no finished unit (failed or absent); a value followed by (k) averages only k folds.")


def comparison_table(summary: Summary, au_names: list[str], total_folds: int, published: Comparison | None) -> Table:
    """Tables 1/2: the published methods' per-AU F1, then each row this sweep trained."""
    header = ["method", "source", *au_names, "avg", "folds"]
    rows, records = [], []
    if published is not None:
        for method, pub in published.frame.iterrows():
            rows.append([str(method), "published", *[fmt(pub[c]) for c in [*au_names, "avg"]], "3/3"])
            records.append({"method": method, "source": "published", **{c: pub[c] for c in [*au_names, "avg"]},
                            "folds": 3})
    for row in summary.mean.index:
        rows.append([row, "this run", *[_mean_text(summary, row, c) for c in [*au_names, "avg"]],
                     _folds_text(summary, row, total_folds)])
        records.append({"method": row, "source": "this run", **summary.mean.loc[row].to_dict(),
                        "folds": int(summary.folds.at[row])})
    data = pd.DataFrame(records, columns=["method", "source", *au_names, "avg", "folds"])
    ranks = _rank_columns(data, {c: header.index(c) for c in [*au_names, "avg"]})
    notes = [_FOLD_NOTE, "Bold: best per column; underlined (italic in Markdown): second best."]
    if published is not None:
        notes.append(f"Published rows: {published.source}." + (f" {published.note}" if published.note else ""))
    title = "Comparison with published methods (Tables 1/2): per-AU F1"
    return Table("comparison", title, header, rows, data, ranks, notes)


def _paper_note(dataset: str) -> str:
    return "" if dataset == "bp4d" else f" The paper's numbers are on BP4D; this run is on {dataset}: not comparable."


def ablation_table(summary: Summary, variants: dict[str, Variant], total_folds: int, paper: pd.Series,
                   dataset: str) -> Table:
    """Table 3: each variant's switches and average F1 (mean ± std over folds) beside the paper's."""
    header = ["variant", "stage I", "L_ID", "L_Orth", "L_Contra", "avg F1 (mean ± std)", "folds", "paper"]
    rows, records = [], []
    for row in summary.mean.index:
        variant = variants.get(row)
        switches = {k: (getattr(variant, k) if variant else None) for k in ("stage1", "id_loss", "orth", "contra")}
        marks = [MISSING if on is None else (YES if on else NO) for on in switches.values()]
        paper_avg = float(paper.get(row, np.nan))
        rows.append([row, *marks, _mean_std_text(summary, row), _folds_text(summary, row, total_folds), fmt(paper_avg)])
        records.append({"variant": row, **switches, "avg": summary.mean.at[row, "avg"],
                        "avg_std": summary.std.at[row, "avg"], "folds": int(summary.folds.at[row]), "paper": paper_avg})
    data = pd.DataFrame(records, columns=["variant", "stage1", "id_loss", "orth", "contra", "avg", "avg_std", "folds", "paper"])
    notes = [_FOLD_NOTE, "Bold: best per column; underlined (italic in Markdown): second best. Paper: Table 3." + _paper_note(dataset)]
    return Table("ablation", "Ablation (Table 3): average F1", header, rows, data,
                 _rank_columns(data, {"avg": 5, "paper": 7}), notes)


def backbones_table(summary: Summary, total_folds: int, paper: pd.Series, dataset: str) -> Table:
    """Table 4: stage-0 average F1 per backbone beside the paper's."""
    header = ["backbone", "avg F1 (mean ± std)", "folds", "paper"]
    rows, records = [], []
    for row in summary.mean.index:
        paper_avg = float(paper.get(row, np.nan))
        rows.append([row, _mean_std_text(summary, row), _folds_text(summary, row, total_folds), fmt(paper_avg)])
        records.append({"backbone": row, "avg": summary.mean.at[row, "avg"], "avg_std": summary.std.at[row, "avg"],
                        "folds": int(summary.folds.at[row]), "paper": paper_avg})
    data = pd.DataFrame(records, columns=["backbone", "avg", "avg_std", "folds", "paper"])
    notes = [_FOLD_NOTE, "Bold: best per column; underlined (italic in Markdown): second best. Paper: Table 4 (stage 0)." + _paper_note(dataset)]
    return Table("backbones", "Backbones (Table 4), stage 0: average F1", header, rows, data,
                 _rank_columns(data, {"avg": 1, "paper": 3}), notes)
