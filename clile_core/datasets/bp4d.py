"""BP4D: its AUs, fold lists, published rows and the importer of its occurrence labels
(AUCoding/AU_OCC/{SUBJ}_{TASK}.csv -> manifest frame table)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from clile_core.data.labels_io import frame_table, labels_dir, note_frame, numbered_rows, parse_frame, parse_int, where
from clile_core.data.manifest import ManifestError, au_names
from clile_core.datasets import DatasetSpec, PublishedRows, register_dataset

AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
LABELS_FOLDER = "AUCoding/AU_OCC"
FILE_NAME = re.compile(r"(?P<subject>[^_]+)_(?P<session>[^_]+)\.csv")
OCCURRENCE = {0: 0, 1: 1, 9: -1}  # 9 = not coded, masked downstream as -1


def _header_positions(header: list[str], path: Path) -> tuple[int, list[int]]:
    """Column positions of the frame index ('0') and of the standard AUs, in AUS order."""
    position = {name: i for i, name in enumerate(header)}
    if "0" not in position:
        raise ManifestError(f"{where(path, 1)}: header has no '0' (frame index) column; the first row must be column numbers")
    missing = [n for n in AUS if str(n) not in position]
    if missing:
        raise ManifestError(
            f"{where(path, 1)}: header lacks standard AU column(s) {missing}; every AU_OCC file must code "
            f"AUs {list(AUS)} - re-extract the file from the BP4D release"
        )
    return position["0"], [position[str(n)] for n in AUS]


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
            OCCURRENCE[parse_int(cells[c], path=path, line=line, what=f"AU{au}", allowed=OCCURRENCE)]
            for c, au in zip(au_cols, AUS)
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


SPEC = register_dataset(DatasetSpec(
    name="bp4d",
    description="BP4D-Spontaneous: 41 subjects, 8 tasks, 12 AUs (paper Table 1)",
    aus=AUS,
    label_rule=f"AU_OCC cell {OCCURRENCE}: 1 present, 0 absent, 9 not coded (-1, masked)",
    # JAA-Net / ME-GraphAU subject lists
    folds=(
        tuple("F001 M007 F018 F008 F002 M004 F010 F009 M012 M001 F016 M014 F023 M008".split()),
        tuple("M011 F003 M010 M002 F005 F022 M018 M017 F013 M016 F020 F011 M013 M005".split()),
        tuple("F007 F015 F006 F019 M006 M009 F012 M003 F004 F021 F017 M015 F014".split()),
    ),
    importer=read_labels,
    published=PublishedRows("bp4d_f1.csv", "BP4D", "Table 1"),
))
