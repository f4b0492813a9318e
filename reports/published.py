"""The paper's published numbers (Tables 1–4), shipped as CSV files beside this module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

PUBLISHED = Path(__file__).resolve().parent / "published"

# The paper's backbone names -> our registry names (clile_core.models.backbones.BACKBONES).
BACKBONE_NAMES = {
    "ResNet18": "resnet18",
    "Swin-Transformer": "swin_t",
    "ResNet152": "resnet152",
    "ResNet50": "resnet50",
    "EfficientNet-B2": "efficientnet_b2",
}
_COMPARISON_FILES = {"bp4d": "bp4d_f1.csv", "disfa": "disfa_f1.csv"}


def read(name: str) -> pd.DataFrame:
    return pd.read_csv(PUBLISHED / name)


@dataclass(frozen=True)
class Comparison:
    """Table 1 or 2: published per-AU F1 (index: method; columns: kind, AU…, avg) and how to read it."""

    frame: pd.DataFrame
    source: str  # e.g. "BP4D (paper Table 1)"
    note: str  # empty when the runs and the paper share the dataset


def comparison(dataset: str, au_names: list[str]) -> Comparison | None:
    """The published table for ``dataset`` if its AU set is ``au_names``.

    Synthetic runs get BP4D's table when their AUs are BP4D's, flagged as not comparable: the shapes
    of the bars are still informative, the numbers are not.
    """
    name = _COMPARISON_FILES.get(dataset, _COMPARISON_FILES["bp4d"] if dataset == "synthetic" else None)
    if name is None:
        return None
    frame = read(name).set_index("method")
    if [c for c in frame.columns if c.startswith("AU")] != list(au_names):
        return None
    table = "Table 1" if name.startswith("bp4d") else "Table 2"
    source = f"{name.split('_')[0].upper()} (paper {table})"
    note = "" if dataset in _COMPARISON_FILES else (
        f"Published rows are the paper's results on BP4D, not on the {dataset} data of this run: not comparable.")
    return Comparison(frame, source, note)


def ablation() -> pd.Series:
    """Table 3 (BP4D): variant -> average F1."""
    return read("bp4d_ablation.csv").set_index("variant")["avg"]


def backbones() -> pd.Series:
    """Table 4 (BP4D, stage 0): our backbone name -> average F1."""
    frame = read("bp4d_backbones.csv")
    return pd.Series(frame["avg"].to_numpy(), index=frame["backbone"].map(BACKBONE_NAMES), name="avg")
