"""Subject-exclusive 3-fold protocol lists and the per-fold train/val/test/seen split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clile_core.data.folds import dealt_parts, split_fold, test_subjects as fold_test_subjects
from clile_core.datasets import get_dataset

BP4D_PARTS = get_dataset("bp4d").folds


def test_bp4d_fold_lists() -> None:
    fold1, fold2, fold3 = (fold_test_subjects("bp4d", k) for k in (1, 2, 3))
    assert fold1 == list(BP4D_PARTS[2]) and fold2 == list(BP4D_PARTS[1]) and fold3 == list(BP4D_PARTS[0])
    assert len(fold1) == 13 and "F007" in fold1 and "F014" in fold1
    assert len(fold2) == 14 and "M011" in fold2
    assert len(fold3) == 14 and "F001" in fold3 and "M008" in fold3


def test_disfa_fold_lists() -> None:
    folds = [fold_test_subjects("disfa", k) for k in (1, 2, 3)]
    assert [len(f) for f in folds] == [9, 9, 9]
    assert "SN003" in folds[0] and "SN013" in folds[1] and "SN002" in folds[2]


@pytest.mark.parametrize("dataset, n", [("bp4d", 41), ("disfa", 27)])
def test_folds_cover_every_subject_once(dataset: str, n: int) -> None:
    tested = [s for k in (1, 2, 3) for s in fold_test_subjects(dataset, k)]
    assert len(tested) == n and len(set(tested)) == n


def test_unknown_fold_and_dataset_refused() -> None:
    with pytest.raises(ValueError, match="fold"):
        fold_test_subjects("bp4d", 4)
    with pytest.raises(ValueError, match="unknown dataset"):
        fold_test_subjects("ck+", 1)
    with pytest.raises(ValueError, match="subjects="):
        fold_test_subjects("synthetic", 1)


def test_synthetic_folds_deterministic_and_disjoint() -> None:
    subjects = [f"S{i:02d}" for i in range(10)]
    parts = dealt_parts(list(reversed(subjects)) + subjects[:3])  # order and repeats must not matter
    assert parts == dealt_parts(subjects)
    flat = [s for p in parts for s in p]
    assert sorted(flat) == subjects and len(flat) == len(set(flat))
    assert [len(p) for p in parts] == [4, 3, 3]
    assert fold_test_subjects("synthetic", 1, subjects) == parts[2]
    with pytest.raises(ValueError, match="at least 3"):
        dealt_parts(["a", "b"])


def bp4d_manifest(frames: int = 20, sessions: tuple[str, ...] = ("T1", "T2")) -> pd.DataFrame:
    subjects = [s for part in BP4D_PARTS for s in part]
    rows = [(s, t, f) for s in subjects for t in sessions for f in range(frames)]
    df = pd.DataFrame(rows, columns=["subject", "session", "frame"])
    # shuffled rows: the seen tail must come from frame order, not file order
    return df.sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_split_roles_disjoint_and_subject_exclusive(fold: int) -> None:
    manifest = bp4d_manifest()
    split = split_fold(manifest, "bp4d", fold, seed=3)
    roles = {"train": split.train, "val": split.val, "test": split.test, "seen": split.seen}
    for a in roles:
        for b in roles:
            if a < b:
                assert not set(roles[a]) & set(roles[b]), (a, b)
    assert sum(len(r) for r in roles.values()) == len(manifest)
    subj = manifest["subject"].to_numpy()
    train_s, val_s, test_s = set(subj[split.train]), set(subj[split.val]), set(subj[split.test])
    assert not train_s & val_s and not train_s & test_s and not val_s & test_s
    assert test_s == set(fold_test_subjects("bp4d", fold)) == set(split.test_subjects)
    assert set(subj[split.seen]) <= train_s == set(split.train_subjects)
    assert val_s == set(split.val_subjects) and len(val_s) == round(0.15 * (41 - len(test_s)))


def test_split_same_seed_same_split_other_seed_other_val() -> None:
    manifest = bp4d_manifest()
    a, b = split_fold(manifest, "bp4d", 1, seed=7), split_fold(manifest, "bp4d", 1, seed=7)
    for field in ("train", "val", "test", "seen"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    val_sets = {tuple(split_fold(manifest, "bp4d", 1, seed=s).val_subjects) for s in range(6)}
    assert len(val_sets) > 1


def test_seen_frames_are_tail_of_each_training_session() -> None:
    manifest = bp4d_manifest(frames=20)
    split = split_fold(manifest, "bp4d", 2, seen_fraction=0.1, seed=0)
    seen = manifest.iloc[split.seen]
    assert len(seen) == len(split.train_subjects) * 2 * 2
    for (subject, session), group in manifest.iloc[split.train].groupby(["subject", "session"]):
        tail = seen[(seen["subject"] == subject) & (seen["session"] == session)]
        assert sorted(tail["frame"]) == [18, 19]
        assert group["frame"].max() == 17


def test_seen_split_with_non_default_index() -> None:
    # a filtered manifest keeps its old row labels; the split must still return positions
    manifest = bp4d_manifest(frames=10)
    manifest.index = manifest.index * 2 + 5
    split = split_fold(manifest, "bp4d", 3, seen_fraction=0.2, seed=1)
    assert set(manifest.iloc[split.seen]["frame"]) == {8, 9}
    assert len(split.seen) == len(split.train_subjects) * 2 * 2


def test_split_refuses_manifest_without_test_subjects() -> None:
    manifest = pd.DataFrame({"subject": ["F001", "M007"], "session": ["T1", "T1"], "frame": [0, 0]})
    with pytest.raises(ValueError, match="none of its test subjects"):
        split_fold(manifest, "bp4d", 1)
