"""DISFA: its AUs, fold lists, published rows and the importer of its intensity labels
(ActionUnit_Labels/{SN}/{SN}_au{K}.txt -> manifest frame table)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clile_core.data.labels_io import frame_table, labels_dir, note_frame, numbered_rows, parse_frame, parse_int, where
from clile_core.data.manifest import ManifestError, au_names
from clile_core.datasets import DatasetSpec, PublishedRows, register_dataset

AUS = (1, 2, 4, 6, 9, 12, 25, 26)
LABELS_FOLDER = "ActionUnit_Labels"
INTENSITIES = range(6)
POSITIVE_FROM = 2  # the protocol's occurrence threshold: intensity >= 2 (B or stronger) counts as present


def _is_header(cells: list[str]) -> bool:
    """Some releases start with e.g. 'frame,intensity'; a row of all non-numeric cells is that header."""
    return not any(cell.lstrip("-").isdigit() for cell in cells)


def _read_au_file(path: Path) -> dict[int, int]:
    """frame -> occurrence (0/1) of one AU file."""
    occurrence: dict[int, int] = {}
    first_line: dict[int, int] = {}
    for index, (line, cells) in enumerate(numbered_rows(path)):
        if index == 0 and _is_header(cells):
            continue
        if len(cells) != 2:
            raise ManifestError(f"{where(path, line)}: expected 'frame,intensity', got {len(cells)} cell(s); fix that line")
        frame = parse_frame(cells[0], path, line)
        note_frame(first_line, frame, path, line)
        occurrence[frame] = int(parse_int(cells[1], path=path, line=line, what="intensity", allowed=INTENSITIES) >= POSITIVE_FROM)
    return occurrence


def _check_aligned(reference: tuple[Path, dict[int, int]], other: tuple[Path, dict[int, int]]) -> None:
    """All AU files of a subject must label the same frames, or the joined rows would mix unlabelled frames in."""
    (ref_path, ref), (path, labels) = reference, other
    if len(labels) != len(ref):
        raise ManifestError(
            f"{path} has {len(labels)} frames but {ref_path} has {len(ref)}; a subject's AU files must cover the "
            "same frames - re-extract the truncated one"
        )
    stray = sorted(set(labels) - set(ref))
    if stray:
        raise ManifestError(f"{path} labels frame {stray[0]}, which {ref_path} does not; the files must cover the same frames")


def _read_subject(folder: Path) -> pd.DataFrame:
    subject = folder.name
    files: list[tuple[Path, dict[int, int]]] = []
    for au in AUS:
        path = folder / f"{subject}_au{au}.txt"
        if not path.is_file():
            raise ManifestError(f"missing AU file {path}; every DISFA subject needs {subject}_au{{K}}.txt for K in {list(AUS)}")
        files.append((path, _read_au_file(path)))
        _check_aligned(files[0], files[-1])
    frames = sorted(files[0][1])
    table = pd.DataFrame({name: [labels[f] for f in frames] for name, (_, labels) in zip(au_names("disfa"), files)}, dtype="int64")
    table.insert(0, "frame", pd.Series(frames, dtype="int64"))
    table.insert(0, "session", "")
    table.insert(0, "subject", subject)
    return table


def read_labels(root: str | Path, image_pattern: str = "{subject}/{frame}.png") -> pd.DataFrame:
    folder = labels_dir(root, LABELS_FOLDER, "DISFA")
    # hidden folders (.ipynb_checkpoints, ...) are tool litter, never subjects
    subjects = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subjects:
        raise ManifestError(f"DISFA labels: no subject folders in {folder}; expected e.g. {folder}/SN001/SN001_au1.txt")
    return frame_table([_read_subject(s) for s in subjects], "disfa", image_pattern)


SPEC = register_dataset(DatasetSpec(
    name="disfa",
    description="DISFA: 27 subjects, one video each, 8 AUs (paper Table 2)",
    aus=AUS,
    label_rule=f"intensity 0-5 per frame; present (1) from {POSITIVE_FROM} (B) up, else 0",
    # JAA-Net / ME-GraphAU subject lists
    folds=(
        tuple("SN002 SN010 SN001 SN026 SN027 SN032 SN030 SN009 SN016".split()),
        tuple("SN013 SN018 SN011 SN028 SN012 SN006 SN031 SN021 SN024".split()),
        tuple("SN003 SN029 SN023 SN025 SN008 SN005 SN007 SN017 SN004".split()),
    ),
    importer=read_labels,
    published=PublishedRows("disfa_f1.csv", "DISFA", "Table 2"),
))
