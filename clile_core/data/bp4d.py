"""BP4D occurrence labels (AUCoding/AU_OCC/{SUBJ}_{TASK}.csv) -> manifest frame table."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from clile_core.data.labels_io import frame_table, labels_dir, note_frame, numbered_rows, parse_frame, parse_int, where
from clile_core.data.manifest import AU_SETS, ManifestError, au_names

LABELS_FOLDER = "AUCoding/AU_OCC"
FILE_NAME = re.compile(r"(?P<subject>[^_]+)_(?P<session>[^_]+)\.csv")
OCCURRENCE = {0: 0, 1: 1, 9: -1}  # 9 = not coded, masked downstream as -1


def _header_positions(header: list[str], path: Path) -> tuple[int, list[int]]:
    """Column positions of the frame index ('0') and of the standard AUs, in AU_SETS order."""
    position = {name: i for i, name in enumerate(header)}
    if "0" not in position:
        raise ManifestError(f"{where(path, 1)}: header has no '0' (frame index) column; the first row must be column numbers")
    missing = [n for n in AU_SETS["bp4d"] if str(n) not in position]
    if missing:
        raise ManifestError(
            f"{where(path, 1)}: header lacks standard AU column(s) {missing}; every AU_OCC file must code "
            f"AUs {AU_SETS['bp4d']} - re-extract the file from the BP4D release"
        )
    return position["0"], [position[str(n)] for n in AU_SETS["bp4d"]]


def _read_file(path: Path, subject: str, session: str) -> pd.DataFrame:
    rows = numbered_rows(path)
    first = next(rows, None)
    if first is None:
        raise ManifestError(f"{path}: file is empty; expected a header row of column numbers then one row per frame")
    frame_col, au_cols = _header_positions(first[1], path)
    width = max(frame_col, *au_cols) + 1
    frames: list[int] = []
    labels: list[list[int]] = []
    first_line: dict[int, int] = {}
    for line, cells in rows:
        if len(cells) < width:
            raise ManifestError(f"{where(path, line)}: {len(cells)} cells, the header needs at least {width}; fix that line")
        frame = parse_frame(cells[frame_col], path, line)
        note_frame(first_line, frame, path, line)
        frames.append(frame)
        labels.append([
            OCCURRENCE[parse_int(cells[c], path, line, f"AU{au}", OCCURRENCE)]
            for c, au in zip(au_cols, AU_SETS["bp4d"])
        ])
    table = pd.DataFrame(labels, columns=au_names("bp4d"), dtype="int64")
    table.insert(0, "frame", pd.Series(frames, dtype="int64"))
    table.insert(0, "session", session)
    table.insert(0, "subject", subject)
    return table


def read_labels(root: str | Path, image_pattern: str = "{subject}/{session}/{frame}.jpg") -> pd.DataFrame:
    folder = labels_dir(root, LABELS_FOLDER, "BP4D")
    paths = sorted(folder.glob("*.csv"))
    if not paths:
        raise ManifestError(f"BP4D labels: no .csv files in {folder}; expected files named {{SUBJ}}_{{TASK}}.csv, e.g. F001_T1.csv")
    tables = []
    for path in paths:
        match = FILE_NAME.fullmatch(path.name)
        if match is None:
            raise ManifestError(f"{path}: name is not {{SUBJ}}_{{TASK}}.csv (e.g. F001_T1.csv); rename or move it out of {folder}")
        tables.append(_read_file(path, match["subject"], match["session"]))
    return frame_table(tables, "bp4d", image_pattern)
