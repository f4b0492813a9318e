"""Shared plumbing for the raw-label importers: line-numbered reading, refusals, the final frame table."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from clile_core.data.manifest import ManifestError, au_names


def where(path: Path, line: int) -> str:
    """'file, line N' as an editor would show it, so a refusal can be fixed by opening that spot."""
    return f"{path}, line {line}"


def labels_dir(root: str | Path, expected: str, dataset: str) -> Path:
    """The folder holding the label files; refuse early with the layout we expect instead of 'no files'."""
    folder = Path(root) / expected
    if not folder.is_dir():
        raise ManifestError(
            f"{dataset} labels: expected folder {folder} does not exist; pass --labels the directory "
            f"that contains {expected.split('/')[0]}/ (the dataset's release layout)"
        )
    return folder


def numbered_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, stripped comma-separated cells); blank lines are skipped, their numbers kept."""
    with path.open(newline="") as fh:
        for number, text in enumerate(fh, start=1):
            if text.strip():
                yield number, [cell.strip() for cell in text.split(",")]


def parse_int(cell: str, *, path: Path, line: int, what: str, allowed: Iterable[int]) -> int:
    allowed = sorted(allowed)
    shown = f"{allowed[0]}..{allowed[-1]}" if allowed == list(range(allowed[0], allowed[-1] + 1)) else str(allowed)
    try:
        value = int(cell)
    except ValueError:
        value = None
    if value not in allowed:
        raise ManifestError(
            f"{where(path, line)}: {what} is {cell!r}; the protocol allows integers {shown}. "
            "Fix or remove that line (a corrupted download is the usual cause)"
        )
    return value


def parse_frame(cell: str, path: Path, line: int) -> int:
    if not cell.isdigit():
        raise ManifestError(f"{where(path, line)}: frame index {cell!r} is not a non-negative integer; fix that line")
    return int(cell)


def note_frame(first_line: dict[int, int], frame: int, path: Path, line: int) -> None:
    """Record a frame's line; a repeat would silently double-count (or contradict) that frame's labels."""
    if frame in first_line:
        raise ManifestError(
            f"{path}: frame {frame} appears twice, on line {first_line[frame]} and line {line}; keep one of them"
        )
    first_line[frame] = line


def frame_table(tables: list[pd.DataFrame], dataset: str, image_pattern: str) -> pd.DataFrame:
    """Concatenate per-file tables into the manifest layout: meta columns, then the standard AUs in order."""
    df = pd.concat(tables, ignore_index=True).sort_values(["subject", "session", "frame"], kind="stable")
    df = df.reset_index(drop=True)
    if df.empty:
        raise ManifestError(f"{dataset} label files hold no frames (header-only files?); check the labels download")
    try:
        images = [
            image_pattern.format(subject=s, session=t, frame=f)
            for s, t, f in zip(df["subject"], df["session"], df["frame"].tolist())
        ]
    except (KeyError, IndexError, ValueError) as exc:
        raise ManifestError(
            f"image pattern {image_pattern!r} cannot be filled ({exc!r}); it may use {{subject}}, {{session}} "
            "and {frame} (an int, so {frame:04d} works)"
        ) from None
    df.insert(0, "image", images)
    return df[["image", "subject", "session", "frame", *au_names(dataset)]]
