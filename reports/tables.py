"""Aggregate cells into the paper's tables: mean over folds per AU, mean ± std of the average, fold count."""

from __future__ import annotations

import numpy as np
import pandas as pd

MISSING = "—"


def summarise(cells: pd.DataFrame, rows: list[str], au_names: list[str]) -> pd.DataFrame:
    """Rows in the given order (absent ones included, all missing); columns AU…, avg, avg_std, folds."""
    out = []
    for row in rows:
        mine = cells[cells["row"] == row] if len(cells) else cells
        record: dict[str, object] = {"row": row, "folds": int(len(mine))}
        for au in [*au_names, "avg"]:
            record[au] = float(mine[au].mean()) if len(mine) and au in mine else np.nan
        record["avg_std"] = float(mine["avg"].std(ddof=0)) if len(mine) and "avg" in mine else np.nan
        out.append(record)
    return pd.DataFrame(out).set_index("row")


def to_markdown(summary: pd.DataFrame, au_names: list[str], total_folds: int) -> str:
    header = ["", *au_names, "avg (mean ± std)", "folds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, rec in summary.iterrows():
        cells = [MISSING if np.isnan(rec[au]) else f"{rec[au]:.1f}" for au in au_names]
        avg = MISSING if np.isnan(rec["avg"]) else f"{rec['avg']:.1f} ± {rec['avg_std']:.1f}"
        lines.append("| " + " | ".join([str(row), *cells, avg, f"{int(rec['folds'])}/{total_folds}"]) + " |")
    return "\n".join(lines)
