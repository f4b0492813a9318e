"""The manifest: one row per frame, AU labels in {1, 0, -1} (-1 = not coded, masked everywhere)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from clile_core.atomic import atomic_path
from clile_core.datasets import au_numbers
from clile_core.paths import inside_root

META_COLUMNS = ["image", "subject", "session", "frame"]


class ManifestError(ValueError):
    """A manifest or raw label file that breaks the protocol; the message names file and line."""


def au_names(au_set: str) -> list[str]:
    """Manifest column names of a label set: a registered dataset's AUs, in its standard order."""
    return [f"AU{n}" for n in au_numbers(au_set)]


def au_columns(df: pd.DataFrame) -> list[str]:
    """AU columns in file order (the dataset's standard order)."""
    return [c for c in df.columns if c.startswith("AU") and c[2:].isdigit()]


def validate(df: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    missing = [c for c in META_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{source}: missing columns {missing}; a manifest needs {META_COLUMNS} + AU columns")
    aus = au_columns(df)
    if not aus:
        raise ManifestError(f"{source}: no AU columns (expected columns named AU1, AU2, ...)")
    for col in aus:
        bad = ~df[col].isin([1, 0, -1])
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ManifestError(
                f"{source}: column {col} row {row + 2} holds {df[col].iloc[row]!r}; allowed values are 1, 0, -1"
            )
    for row, name in enumerate(df["image"].astype(str)):
        try:
            inside_root("<images root>", name, f"{source}: row {row + 2} column image")
        except ValueError as exc:
            raise ManifestError(f"{exc}; check --image-pattern") from None
    dup = df.duplicated(subset=["subject", "session", "frame"])
    if dup.any():
        row = int(dup.to_numpy().nonzero()[0][0])
        raise ManifestError(f"{source}: row {row + 2} repeats subject/session/frame {tuple(df.iloc[row][['subject', 'session', 'frame']])}")
    return df


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} does not exist; write one with `python -m clile_core.data.prepare`")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, dtype={"subject": str, "session": str, "image": str}, keep_default_na=False)
    for col in au_columns(df):
        df[col] = df[col].astype(int)
    return validate(df, str(path))


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> None:
    validate(df, str(path))
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)


def manifest_hash(df: pd.DataFrame) -> str:
    """Content hash of the rows that matter for training, independent of file format."""
    cols = META_COLUMNS + au_columns(df)
    payload = df[cols].to_csv(index=False).encode()
    return hashlib.sha256(payload).hexdigest()[:16]
