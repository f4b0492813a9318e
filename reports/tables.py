"""The paper's tables as format-neutral :class:`Table` objects: display text, best/second marks, and the
numbers behind them (for CSV). Rendering to Markdown, LaTeX, HTML lives in ``reports.formats``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from clile_core.names import (ID_PROBE_ACC, ID_PROBE_CHANCE, ILE_SILHOUETTE_AU, ILE_SILHOUETTE_SUBJECT, SEEN_F1_AVG,
                              TEST_F1_AVG)
from clile_core.variants import Variant, switch_columns
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


_FOLD_NOTE = ("Mean over folds (× seeds) of test F1 (%) on unseen subjects; folds = finished (fold, seed) runs / runs "
              f"planned; {MISSING} = no finished unit (failed or absent); a value followed by (k) averages only k runs.")


def paired_differences(cells: pd.DataFrame, rows: list[str], baseline: str, column: str = "avg") -> pd.DataFrame:
    """Each row's ``column`` minus the baseline row's on the same (fold, seed): mean, 95 % t-interval, pairs.

    Pairing removes what the folds share (a hard fold is hard for every row), which is what makes a
    difference smaller than the fold-to-fold spread readable. Fewer than two pairs give no interval.
    """
    keyed = cells.set_index(["row", "fold", "seed"])[column].astype(float) if len(cells) else pd.Series(dtype=float)
    records = {}
    for row in rows:
        if row == baseline or row not in keyed.index.get_level_values(0) or baseline not in keyed.index.get_level_values(0):
            records[row] = {"diff": np.nan, "low": np.nan, "high": np.nan, "pairs": 0}
            continue
        diffs = (keyed.loc[row] - keyed.loc[baseline]).dropna().to_numpy()
        mean = float(diffs.mean()) if len(diffs) else np.nan
        half = (float(stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)))
                if len(diffs) >= 2 else np.nan)
        records[row] = {"diff": mean, "low": mean - half, "high": mean + half, "pairs": len(diffs)}
    return pd.DataFrame.from_dict(records, orient="index", columns=["diff", "low", "high", "pairs"])


BASELINE = "baseline"


def _excludes_zero(diff: pd.Series) -> bool:
    """The 95 % interval lies wholly above or below 0 (NaN bounds, i.e. no interval, never do)."""
    return bool(diff["low"] > 0 or diff["high"] < 0)


def _difference_text(diff: pd.Series, row: str, baseline: str) -> str:
    """'+1.2 [−0.5, +2.9]' with '*' when the interval excludes 0; the mean alone with one pair."""
    if row == baseline:
        return BASELINE
    if math.isnan(diff["diff"]):
        return MISSING
    if math.isnan(diff["low"]):
        return f"{diff['diff']:+.1f}"
    return f"{diff['diff']:+.1f} [{diff['low']:+.1f}, {diff['high']:+.1f}]" + ("*" if _excludes_zero(diff) else "")


def _difference_note(differences: pd.DataFrame, baseline: str) -> str:
    excluding = [row for row, d in differences.iterrows() if _excludes_zero(d)]
    said = ", ".join(excluding) if excluding else "none"
    return (f"Δ vs {baseline}: mean paired difference of avg F1 over the same (fold, seed) runs with its 95 % "
            f"t-interval; * = the interval excludes 0 (here: {said}).")


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


def ablation_table(summary: Summary, *, variants: dict[str, Variant], total_folds: int, paper: pd.Series,
                   dataset: str, differences: pd.DataFrame, baseline: str) -> Table:
    """Table 3: each variant's switches and average F1 (mean ± std over folds × seeds) beside the paper's,
    and its paired difference to ``baseline`` (A0) with a 95 % interval."""
    columns = switch_columns()
    header = ["variant", *columns.values(), "avg F1 (mean ± std)", "folds", "paper", f"Δ vs {baseline} [95% CI]"]
    rows, records = [], []
    for row in summary.mean.index:
        variant = variants.get(row)
        switches = {k: (getattr(variant, k) if variant else None) for k in columns}
        marks = [MISSING if on is None else (YES if on else NO) for on in switches.values()]
        paper_avg = float(paper.get(row, np.nan))
        diff = differences.loc[row]
        rows.append([row, *marks, _mean_std_text(summary, row), _folds_text(summary, row, total_folds), fmt(paper_avg),
                     _difference_text(diff, row, baseline)])
        records.append({"variant": row, **switches, "avg": summary.mean.at[row, "avg"],
                        "avg_std": summary.std.at[row, "avg"], "folds": int(summary.folds.at[row]), "paper": paper_avg,
                        "diff": diff["diff"], "diff_low": diff["low"], "diff_high": diff["high"]})
    data = pd.DataFrame(records, columns=["variant", *columns, "avg", "avg_std", "folds", "paper", "diff", "diff_low",
                                          "diff_high"])
    notes = [_FOLD_NOTE, "Bold: best per column; underlined (italic in Markdown): second best. Paper: Table 3." + _paper_note(dataset),
             _difference_note(differences, baseline)]
    return Table("ablation", "Ablation (Table 3): average F1", header, rows, data,
                 _rank_columns(data, {"avg": header.index("avg F1 (mean ± std)"), "paper": header.index("paper")}), notes)


def backbones_table(summary: Summary, *, total_folds: int, paper: pd.Series, dataset: str,
                    differences: pd.DataFrame, baseline: str) -> Table:
    """Table 4: stage-0 average F1 per backbone beside the paper's, and its paired difference to ``baseline``."""
    header = ["backbone", "avg F1 (mean ± std)", "folds", "paper", f"Δ vs {baseline} [95% CI]"]
    rows, records = [], []
    for row in summary.mean.index:
        paper_avg = float(paper.get(row, np.nan))
        diff = differences.loc[row]
        rows.append([row, _mean_std_text(summary, row), _folds_text(summary, row, total_folds), fmt(paper_avg),
                     _difference_text(diff, row, baseline)])
        records.append({"backbone": row, "avg": summary.mean.at[row, "avg"], "avg_std": summary.std.at[row, "avg"],
                        "folds": int(summary.folds.at[row]), "paper": paper_avg, "diff": diff["diff"],
                        "diff_low": diff["low"], "diff_high": diff["high"]})
    data = pd.DataFrame(records, columns=["backbone", "avg", "avg_std", "folds", "paper", "diff", "diff_low", "diff_high"])
    notes = [_FOLD_NOTE, "Bold: best per column; underlined (italic in Markdown): second best. Paper: Table 4 (stage 0)." + _paper_note(dataset),
             _difference_note(differences, baseline)]
    return Table("backbones", "Backbones (Table 4), stage 0: average F1", header, rows, data,
                 _rank_columns(data, {"avg": 1, "paper": 3}), notes)


# Identity diagnostics beside Table 3: (metric name in a unit's results, column header).
IDENTITY_COLUMNS = [
    (ILE_SILHOUETTE_SUBJECT, "ILE silhouette by subject"),
    (ILE_SILHOUETTE_AU, "ILE silhouette by AU"),
    (ID_PROBE_ACC, "identity probe acc. (%)"),
    (ID_PROBE_CHANCE, "probe chance (%)"),
    (SEEN_F1_AVG, "seen F1"),
    (TEST_F1_AVG, "unseen F1"),
    ("gap", "gap (seen − unseen)"),
]


def identity_table(cells: pd.DataFrame, rows: list[str]) -> Table:
    """Identity diagnostics per row, mean ± std over (fold, seed) runs (``clile_core.diagnostics``): the ILEs'
    subject/AU silhouettes (rows with a stage I), the linear identity probe on the embedding the row predicts
    from (A0: pooled backbone features; others: F_emb^G), and the seen − unseen F1 gap."""
    cells = cells.copy()
    if {SEEN_F1_AVG, TEST_F1_AVG} <= set(cells.columns):
        cells["gap"] = cells[SEEN_F1_AVG] - cells[TEST_F1_AVG]
    header = ["row", *[title for _, title in IDENTITY_COLUMNS], "folds"]
    table_rows, records = [], []
    for row in rows:
        mine = cells[cells["row"] == row] if len(cells) else cells
        record: dict[str, object] = {"row": row, "folds": len(mine)}
        texts = []
        for name, _ in IDENTITY_COLUMNS:
            values = mine[name].dropna().astype(float) if name in mine else pd.Series(dtype=float)
            digits = 2 if name in (ILE_SILHOUETTE_SUBJECT, ILE_SILHOUETTE_AU) else 1
            mean = float(values.mean()) if len(values) else np.nan
            record[name] = mean
            spread = f" ± {values.std(ddof=0):.{digits}f}" if len(values) > 1 else ""
            texts.append(fmt(mean, digits) + (spread if len(values) else ""))
        table_rows.append([row, *texts, str(len(mine))])
        records.append(record)
    data = pd.DataFrame(records, columns=["row", *[name for name, _ in IDENTITY_COLUMNS], "folds"])
    notes = ["ILE silhouettes: Fig. 3's clustering of the unit-length identity-label embeddings (1 = tight, separated "
             "groups; ~0 = none), by subject (L_ID's aim: high) and by AU. Identity probe: a linear classifier fit on "
             "training frames of training subjects and scored on their held-out frames; CL-ILE's claim is that F_emb^G "
             f"carries less identity than A0's backbone features. {MISSING} = not applicable (no stage I, or no held-out "
             "frames: data.seen_fraction 0)."]
    return Table("identity", "Identity diagnostics", header, table_rows, data, {}, notes)
