"""Per-AU F1 tables for the terminal."""

from __future__ import annotations

from tabulate import tabulate


def f1_rows(metrics: dict[str, float], au_names: list[str], splits: dict[str, str]) -> str:
    """One row per split (label -> metric prefix), one column per AU plus the average, in percent."""
    header = ["", *au_names, "avg"]
    rows = [[label, *(metrics[f"{prefix}_f1_{au}"] for au in au_names), metrics[f"{prefix}_f1_avg"]]
            for label, prefix in splits.items()]
    return tabulate(rows, headers=header, floatfmt=".1f")
