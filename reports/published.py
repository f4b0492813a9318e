"""The paper's published numbers (Tables 1–4), shipped as CSV files beside this module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clile_core.datasets import get_dataset

PUBLISHED = Path(__file__).resolve().parent / "published"

# The paper's backbone names -> our registry names (clile_core.models.backbones.BACKBONES).
BACKBONE_NAMES = {
    "ResNet18": "resnet18",
    "Swin-Transformer": "swin_t",
    "ResNet152": "resnet152",
    "ResNet50": "resnet50",
    "EfficientNet-B2": "efficientnet_b2",
}


def read(name: str) -> pd.DataFrame:
    return pd.read_csv(PUBLISHED / name)


@dataclass(frozen=True)
class Comparison:
    """Table 1 or 2: published per-AU F1 (index: method; columns: kind, AU…, avg) and how to read it."""

    frame: pd.DataFrame
    source: str  # e.g. "BP4D (paper Table 1)"
    note: str  # empty when the runs and the paper share the dataset


def comparison(dataset: str, au_names: list[str]) -> Comparison | None:
    """The published table the ``dataset``'s registry spec names, if its AU set is ``au_names``.

    A spec may name another dataset's table as not comparable (the synthetic set gets BP4D's): the shapes
    of the bars are still informative, the numbers are not.
    """
    rows = get_dataset(dataset).published
    if rows is None:
        return None
    frame = read(rows.file).set_index("method")
    if [c for c in frame.columns if c.startswith("AU")] != list(au_names):
        return None
    note = "" if rows.comparable else (
        f"Published rows are the paper's results on {rows.on}, not on the {dataset} data of this run: "
        "not comparable.")
    return Comparison(frame, rows.source, note)


def ablation() -> pd.Series:
    """Table 3 (BP4D): variant -> average F1."""
    return read("bp4d_ablation.csv").set_index("variant")["avg"]


def backbones() -> pd.Series:
    """Table 4 (BP4D, stage 0): our backbone name -> average F1."""
    frame = read("bp4d_backbones.csv")
    return pd.Series(frame["avg"].to_numpy(), index=frame["backbone"].map(BACKBONE_NAMES), name="avg")
