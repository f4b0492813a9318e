"""BP4D / DISFA label importers and the prepare CLI, on tiny trees written in the genuine release formats."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from clile_core.data import prepare
from clile_core.data.manifest import ManifestError, au_names, read_manifest
from clile_core.datasets import bp4d, disfa

# Real AU_OCC files code more AUs than the 12 standard ones, frame index in column '0'.
BP4D_COLUMNS = list(range(28)) + [39, 50, 51, 52, 53]
BP4D_AUS = au_names("bp4d")
DISFA_AUS = au_names("disfa")
DISFA_ALL_AUS = [1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26]  # the release has 12 AU files; 8 are used


def write_bp4d(root: Path, subject: str, task: str, frames: list[int],
               labels: dict[int, dict[int, int]] | None = None, columns: list[int] = BP4D_COLUMNS) -> Path:
    """AUCoding/AU_OCC/{SUBJ}_{TASK}.csv: header of column numbers, then frame,value,value,... (0 unless given)."""
    labels = labels or {}
    path = root / "AUCoding" / "AU_OCC" / f"{subject}_{task}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(map(str, columns))]
    for frame in frames:
        lines.append(",".join(str(frame) if c == 0 else str(labels.get(frame, {}).get(c, 0)) for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_disfa(root: Path, subject: str, intensities: dict[int, list[int]], first_frame: int = 1,
                aus: list[int] = DISFA_ALL_AUS) -> Path:
    """ActionUnit_Labels/{SN}/{SN}_au{K}.txt: 'frame,intensity' lines, no header (AUs not given are all 0)."""
    folder = root / "ActionUnit_Labels" / subject
    folder.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(intensities.values())))
    for au in aus:
        values = intensities.get(au, [0] * n)
        text = "".join(f"{first_frame + i},{v}\n" for i, v in enumerate(values))
        (folder / f"{subject}_au{au}.txt").write_text(text)
    return folder


def set_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def refusal(read, root: Path) -> str:
    with pytest.raises(ManifestError) as info:
        read(root)
    return str(info.value)


@pytest.fixture
def bp4d_root(tmp_path: Path) -> Path:
    root = tmp_path / "BP4D"
    write_bp4d(root, "M002", "T2", [5, 6], {5: {1: 1, 24: 9}, 6: {12: 1}})
    write_bp4d(root, "F001", "T2", [10, 11], {10: {4: 1, 5: 1}, 11: {17: 9}})
    write_bp4d(root, "F001", "T1", [3, 1, 2], {1: {1: 1, 2: 1, 5: 1}, 2: {23: 9, 6: 1}, 3: {24: 1, 10: 1}})
    write_bp4d(root, "M002", "T1", [7], {7: {14: 1, 15: 1, 7: 1}})
    return root


@pytest.fixture
def disfa_root(tmp_path: Path) -> Path:
    root = tmp_path / "DISFA"
    write_disfa(root, "SN002", {1: [0, 1, 2], 26: [5, 3, 1]})
    write_disfa(root, "SN001", {1: [0, 1, 2, 3], 2: [2, 2, 1, 1], 5: [5, 5, 5, 5], 25: [4, 0, 0, 5]})
    return root


# ---- BP4D ---------------------------------------------------------------------------------------


def test_bp4d_parses_labels_order_and_uncoded(bp4d_root: Path) -> None:
    df = bp4d.read_labels(bp4d_root)
    assert list(df.columns) == ["image", "subject", "session", "frame", *BP4D_AUS]
    assert BP4D_AUS == ["AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23", "AU24"]
    assert list(zip(df["subject"], df["session"], df["frame"])) == [
        ("F001", "T1", 1), ("F001", "T1", 2), ("F001", "T1", 3), ("F001", "T2", 10), ("F001", "T2", 11),
        ("M002", "T1", 7), ("M002", "T2", 5), ("M002", "T2", 6)]
    assert list(df.index) == list(range(8))
    assert df["image"].tolist()[:2] == ["F001/T1/1.jpg", "F001/T1/2.jpg"]
    row = df.set_index(["subject", "session", "frame"])[BP4D_AUS]
    assert row.loc[("F001", "T1", 1)].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert row.loc[("F001", "T1", 2)].tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, -1, 0]
    assert row.loc[("F001", "T1", 3)].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]
    assert row.loc[("F001", "T2", 11)].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, -1, 0, 0]
    assert row.loc[("M002", "T1", 7)].tolist() == [0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0]
    assert row.loc[("M002", "T2", 5)].tolist() == [1] + [0] * 10 + [-1]
    assert "AU5" not in df.columns and "AU50" not in df.columns  # extra coded AUs are dropped
    assert all(df[c].dtype == "int64" for c in ["frame", *BP4D_AUS])


def test_bp4d_maps_columns_by_header_name_not_position(tmp_path: Path) -> None:
    shuffled = [0, 53, *reversed(bp4d.AUS), 5]
    write_bp4d(tmp_path, "F003", "T4", [1], {1: {24: 1, 1: 9, 53: 1}}, columns=shuffled)
    df = bp4d.read_labels(tmp_path)
    assert df[BP4D_AUS].iloc[0].tolist() == [-1] + [0] * 10 + [1]


def test_bp4d_tolerates_whitespace_and_blank_lines(tmp_path: Path) -> None:
    path = write_bp4d(tmp_path, "F001", "T1", [1, 2], {2: {1: 1}})
    path.write_text(path.read_text().replace(",", " , ") + "\n\n")
    assert bp4d.read_labels(tmp_path)["AU1"].tolist() == [0, 1]


@pytest.mark.parametrize("cell, shown", [("2", "'2'"), ("x", "'x'"), ("", "''")])
def test_bp4d_refuses_value_outside_protocol(tmp_path: Path, cell: str, shown: str) -> None:
    path = write_bp4d(tmp_path, "F001", "T1", [1, 2, 3])
    cells = path.read_text().splitlines()[2].split(",")
    cells[BP4D_COLUMNS.index(12)] = cell
    set_line(path, 3, ",".join(cells))
    message = refusal(bp4d.read_labels, tmp_path)
    assert "F001_T1.csv, line 3" in message and "AU12" in message and shown in message and "[0, 1, 9]" in message


def test_bp4d_refuses_non_numeric_frame(tmp_path: Path) -> None:
    path = write_bp4d(tmp_path, "F001", "T1", [1, 2])
    set_line(path, 2, path.read_text().splitlines()[1].replace("1", "a", 1))
    message = refusal(bp4d.read_labels, tmp_path)
    assert "F001_T1.csv, line 2" in message and "'a'" in message


def test_bp4d_refuses_short_row(tmp_path: Path) -> None:
    path = write_bp4d(tmp_path, "F001", "T1", [1, 2])
    set_line(path, 3, "2,0,1")
    message = refusal(bp4d.read_labels, tmp_path)
    assert "F001_T1.csv, line 3" in message and "3 cells" in message


def test_bp4d_refuses_missing_standard_au_column(tmp_path: Path) -> None:
    write_bp4d(tmp_path, "F001", "T1", [1])
    write_bp4d(tmp_path, "F002", "T1", [1], columns=[c for c in BP4D_COLUMNS if c not in (15, 23)])
    message = refusal(bp4d.read_labels, tmp_path)
    assert "F002_T1.csv, line 1" in message and "[15, 23]" in message


def test_bp4d_refuses_duplicate_frame(tmp_path: Path) -> None:
    write_bp4d(tmp_path, "F001", "T1", [1, 2, 3, 2])
    message = refusal(bp4d.read_labels, tmp_path)
    assert "F001_T1.csv" in message and "frame 2" in message and "line 3" in message and "line 5" in message


def test_bp4d_refuses_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "AUCoding").mkdir()
    message = refusal(bp4d.read_labels, tmp_path)
    assert str(tmp_path / "AUCoding" / "AU_OCC") in message and "expected folder" in message
    (tmp_path / "AUCoding" / "AU_OCC").mkdir()
    (tmp_path / "AUCoding" / "AU_OCC" / "readme.txt").write_text("x")
    assert "no .csv files" in refusal(bp4d.read_labels, tmp_path)


def test_bp4d_refuses_unexpected_file_name(tmp_path: Path) -> None:
    write_bp4d(tmp_path, "F001", "T1", [1])
    (tmp_path / "AUCoding" / "AU_OCC" / "F001.csv").write_text("0,1\n")
    assert "F001.csv: name is not {SUBJ}_{TASK}.csv" in refusal(bp4d.read_labels, tmp_path)


def test_bp4d_refuses_header_only_release(tmp_path: Path) -> None:
    write_bp4d(tmp_path, "F001", "T1", [])
    assert "no frames" in refusal(bp4d.read_labels, tmp_path)


# ---- DISFA --------------------------------------------------------------------------------------


def test_disfa_parses_with_threshold_at_two(disfa_root: Path) -> None:
    df = disfa.read_labels(disfa_root)
    assert list(df.columns) == ["image", "subject", "session", "frame", *DISFA_AUS]
    assert DISFA_AUS == ["AU1", "AU2", "AU4", "AU6", "AU9", "AU12", "AU25", "AU26"]
    assert df["subject"].tolist() == ["SN001"] * 4 + ["SN002"] * 3
    assert df["session"].tolist() == [""] * 7
    assert df["frame"].tolist() == [1, 2, 3, 4, 1, 2, 3]
    assert df["image"].tolist()[:2] == ["SN001/1.png", "SN001/2.png"]
    assert df["AU1"].tolist() == [0, 0, 1, 1, 0, 0, 1]  # intensity 1 -> 0, 2 -> 1
    assert df["AU2"].tolist()[:4] == [1, 1, 0, 0]
    assert df["AU25"].tolist()[:4] == [1, 0, 0, 1]
    assert df["AU26"].tolist()[4:] == [1, 1, 0]
    assert "AU5" not in df.columns  # non-standard AU file ignored
    assert list(df.index) == list(range(7))


def test_disfa_joins_au_files_by_frame_number(tmp_path: Path) -> None:
    folder = write_disfa(tmp_path, "SN003", {1: [0, 0, 0], 4: [5, 0, 0]})
    (folder / "SN003_au4.txt").write_text("3,0\n1,5\n2,0\n")  # same frames, different line order
    (folder / "SN003_au9.txt").write_text("2,4\n3,0\n1,0\n")
    df = disfa.read_labels(tmp_path)
    assert df["frame"].tolist() == [1, 2, 3]
    assert df["AU4"].tolist() == [1, 0, 0] and df["AU9"].tolist() == [0, 1, 0]


def test_disfa_tolerates_header_whitespace_and_blank_tail(tmp_path: Path) -> None:
    folder = write_disfa(tmp_path, "SN001", {1: [0, 3]})
    (folder / "SN001_au1.txt").write_text("frame,intensity\n 1 , 0 \n2,3\r\n\n  \n")
    assert disfa.read_labels(tmp_path)["AU1"].tolist() == [0, 1]


@pytest.mark.parametrize("cell", ["6", "-1", "2.5", "high", ""])
def test_disfa_refuses_intensity_outside_protocol(tmp_path: Path, cell: str) -> None:
    folder = write_disfa(tmp_path, "SN001", {1: [0, 1, 2]})
    set_line(folder / "SN001_au12.txt", 2, f"2,{cell}")
    message = refusal(disfa.read_labels, tmp_path)
    assert "SN001_au12.txt, line 2" in message and "intensity" in message and "0..5" in message


def test_disfa_refuses_non_numeric_frame_and_bad_line(tmp_path: Path) -> None:
    folder = write_disfa(tmp_path, "SN001", {1: [0, 1, 2]})
    set_line(folder / "SN001_au2.txt", 3, "three,1")
    assert "SN001_au2.txt, line 3" in refusal(disfa.read_labels, tmp_path)
    set_line(folder / "SN001_au2.txt", 3, "3,1,4")
    message = refusal(disfa.read_labels, tmp_path)
    assert "SN001_au2.txt, line 3" in message and "frame,intensity" in message


def test_disfa_refuses_missing_au_file(tmp_path: Path) -> None:
    folder = write_disfa(tmp_path, "SN001", {1: [0, 1]})
    (folder / "SN001_au25.txt").unlink()
    assert f"missing AU file {folder / 'SN001_au25.txt'}" in refusal(disfa.read_labels, tmp_path)


def test_disfa_refuses_frame_count_mismatch(tmp_path: Path) -> None:
    folder = write_disfa(tmp_path, "SN001", {1: [0, 1, 2]})
    (folder / "SN001_au6.txt").write_text("1,0\n2,0\n")
    message = refusal(disfa.read_labels, tmp_path)
    assert "SN001_au6.txt has 2 frames" in message and "SN001_au1.txt has 3" in message


def test_disfa_refuses_misaligned_frames(tmp_path: Path) -> None:
    folder = write_disfa(tmp_path, "SN001", {1: [0, 1, 2]})
    (folder / "SN001_au9.txt").write_text("1,0\n2,0\n4,0\n")
    message = refusal(disfa.read_labels, tmp_path)
    assert "SN001_au9.txt labels frame 4" in message and "SN001_au1.txt" in message


def test_disfa_refuses_duplicate_frame(tmp_path: Path) -> None:
    folder = write_disfa(tmp_path, "SN001", {1: [0, 1, 2]})
    (folder / "SN001_au4.txt").write_text("1,0\n2,0\n\n1,3\n")
    message = refusal(disfa.read_labels, tmp_path)
    assert "SN001_au4.txt" in message and "frame 1" in message and "line 1" in message and "line 4" in message


def test_disfa_refuses_missing_folder_and_no_subjects(tmp_path: Path) -> None:
    message = refusal(disfa.read_labels, tmp_path)
    assert str(tmp_path / "ActionUnit_Labels") in message and "expected folder" in message
    (tmp_path / "ActionUnit_Labels").mkdir()
    assert "no subject folders" in refusal(disfa.read_labels, tmp_path)


# ---- image pattern --------------------------------------------------------------------------------


def test_image_pattern_override(bp4d_root: Path, disfa_root: Path) -> None:
    df = bp4d.read_labels(bp4d_root, image_pattern="{subject}/{session}/{frame:04d}.jpg")
    assert df["image"].tolist()[0] == "F001/T1/0001.jpg"
    df = disfa.read_labels(disfa_root, image_pattern="LeftVideo{subject}_comp/{frame:05d}.jpg")
    assert df["image"].tolist()[-1] == "LeftVideoSN002_comp/00003.jpg"
    with pytest.raises(ManifestError, match="image pattern"):
        bp4d.read_labels(bp4d_root, image_pattern="{subj}/{frame}.jpg")


# ---- prepare CLI ----------------------------------------------------------------------------------


def make_images(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_prepare_writes_manifest_that_reads_back(tmp_path: Path, bp4d_root: Path, capsys, suffix: str) -> None:
    expected = bp4d.read_labels(bp4d_root)
    images = make_images(tmp_path / "img", expected["image"].tolist())
    out = tmp_path / "out" / f"bp4d{suffix}"
    assert prepare.main(["bp4d", "--labels", str(bp4d_root), "--images", str(images), "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(read_manifest(out), expected, check_dtype=False)
    printed = capsys.readouterr().err
    assert "2 subjects, 8 frames" in printed and "AU1 25.0%" in printed and "Uncoded labels (-1): 3" in printed


def test_prepare_disfa_csv_keeps_empty_session(tmp_path: Path, disfa_root: Path) -> None:
    expected = disfa.read_labels(disfa_root, image_pattern="{subject}/{frame:03d}.png")
    images = make_images(tmp_path / "img", expected["image"].tolist())
    out = tmp_path / "disfa.csv"
    argv = ["disfa", "--labels", str(disfa_root), "--images", str(images), "--out", str(out),
            "--image-pattern", "{subject}/{frame:03d}.png"]
    assert prepare.main(argv) == 0
    pd.testing.assert_frame_equal(read_manifest(out), expected, check_dtype=False)


def test_prepare_refuses_missing_images_without_writing(tmp_path: Path, bp4d_root: Path, capsys) -> None:
    names = bp4d.read_labels(bp4d_root)["image"].tolist()
    images = make_images(tmp_path / "img", names[:5])
    out = tmp_path / "bp4d.csv"
    argv = ["bp4d", "--labels", str(bp4d_root), "--images", str(images), "--out", str(out)]
    assert prepare.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 3 of 8 images are missing") and names[5] in err and "--allow-missing" in err
    assert "Traceback" not in err
    assert not out.exists() and list(tmp_path.glob(".bp4d.csv*")) == []

    assert prepare.main([*argv, "--allow-missing"]) == 0
    assert "dropping those frames" in capsys.readouterr().err
    assert read_manifest(out)["image"].tolist() == names[:5]


def test_prepare_lists_at_most_five_examples(tmp_path: Path, bp4d_root: Path, capsys) -> None:
    names = bp4d.read_labels(bp4d_root)["image"].tolist()
    (tmp_path / "img").mkdir()
    assert prepare.main(["bp4d", "--labels", str(bp4d_root), "--images", str(tmp_path / "img"),
                         "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert "8 of 8" in err and names[4] in err and names[5] not in err


@pytest.mark.parametrize("which", ["labels", "images"])
def test_prepare_reports_missing_dirs_without_traceback(tmp_path: Path, bp4d_root: Path, capsys, which: str) -> None:
    dirs = {"labels": bp4d_root, "images": tmp_path}
    dirs[which] = tmp_path / "nowhere"
    code = prepare.main(["bp4d", "--labels", str(dirs["labels"]), "--images", str(dirs["images"]),
                         "--out", str(tmp_path / "m.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "nowhere" in err and "Traceback" not in err
    assert not (tmp_path / "m.csv").exists()
