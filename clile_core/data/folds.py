"""Subject-exclusive 3-fold protocol (each dataset's subject lists, from its registry spec) and the per-fold split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from clile_core.datasets import FOLDS, get_dataset


def _check_fold(fold: int) -> None:
    if fold not in FOLDS:
        raise ValueError(f"fold must be one of {FOLDS}, got {fold!r}")


def dealt_parts(subjects: list[str]) -> list[list[str]]:
    """Folds of a dataset without subject lists (the synthetic set): sorted subjects dealt round-robin
    into 3 parts, deterministic and balanced."""
    ordered = sorted(set(subjects))
    if len(ordered) < 3:
        raise ValueError(f"the 3-fold protocol needs at least 3 subjects, the manifest has {len(ordered)}")
    return [ordered[i::3] for i in range(3)]


def unlisted_subjects(dataset: str, subjects: list[str]) -> list[str]:
    """Subjects of a dataset with fixed fold lists that no list names: they would be trained on in every
    fold and tested in none."""
    parts = get_dataset(dataset).folds
    if parts is None:
        return []
    listed = {s for part in parts for s in part}
    return sorted(set(subjects) - listed)


def check_subjects(dataset: str, subjects: list[str], source: str, fix: str) -> None:
    unlisted = unlisted_subjects(dataset, subjects)
    if unlisted:
        raise ValueError(f"{source}: subject(s) {unlisted} are in no fold of the {dataset} 3-fold protocol "
                         f"(they would be trained on in every fold and tested in none); {fix}")


def test_subjects(dataset: str, fold: int, subjects: list[str] | None = None) -> list[str]:
    """Fold k tests on part 4-k (fold 1 tests part 3, fold 2 part 2, fold 3 part 1)."""
    _check_fold(fold)
    parts = get_dataset(dataset).folds
    if parts is None:
        if subjects is None:
            raise ValueError(f"{dataset} folds are dealt from the manifest's subjects: pass subjects=")
        parts = dealt_parts(subjects)
    return list(parts[3 - fold])


@dataclass(frozen=True)
class FoldSplit:
    """Row indices into the manifest for each role of one fold."""

    train: np.ndarray  # training subjects, frames used for fitting
    val: np.ndarray  # whole held-out training subjects: model selection only
    test: np.ndarray  # the fold's unseen test subjects
    seen: np.ndarray  # held-out frames of training subjects: measures the identity bias
    train_subjects: list[str]
    val_subjects: list[str]
    test_subjects: list[str]


def split_fold(
    manifest: pd.DataFrame,
    dataset: str,
    fold: int,
    *,
    val_fraction: float = 0.15,
    seen_fraction: float = 0.1,
    seed: int = 0,
) -> FoldSplit:
    """Split a manifest for one fold.

    Validation subjects are carved (seeded) from the training subjects so that test subjects are
    never used for model selection. 'Seen' frames are the last ``seen_fraction`` of each training
    subject's frames per session: a contiguous tail, so that neighbouring near-duplicate frames do
    not leak between fitting and the seen-subject measurement.
    """
    subjects = manifest["subject"].astype(str)
    check_subjects(dataset, subjects.unique().tolist(), f"fold {fold} of {dataset}",
                   "remove their frames from the manifest (`python -m clile_core.data.prepare ... --drop-unlisted`)")
    test_subj = test_subjects(dataset, fold, subjects.unique().tolist())
    present_test = sorted(set(test_subj) & set(subjects))
    if not present_test:
        raise ValueError(f"fold {fold} of {dataset}: none of its test subjects {test_subj} is in the manifest")
    rest = sorted(set(subjects) - set(test_subj))
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(val_fraction * len(rest))))
    if len(rest) - n_val < 1:
        raise ValueError(f"fold {fold}: {len(rest)} training subjects leave none after carving {n_val} for validation")
    val_subj = sorted(rng.choice(rest, size=n_val, replace=False).tolist())
    train_subj = sorted(set(rest) - set(val_subj))

    is_train = subjects.isin(train_subj).to_numpy()
    seen_mask = np.zeros(len(manifest), dtype=bool)
    if seen_fraction > 0:
        train_rows = manifest[is_train]
        order = train_rows.sort_values(["subject", "session", "frame"])
        for _, group in order.groupby(["subject", "session"], sort=False):
            k = int(round(seen_fraction * len(group)))
            if k:
                seen_mask[manifest.index.get_indexer(group.index[-k:])] = True
    all_rows = np.arange(len(manifest))
    return FoldSplit(
        train=all_rows[is_train & ~seen_mask],
        val=all_rows[subjects.isin(val_subj).to_numpy()],
        test=all_rows[subjects.isin(test_subj).to_numpy()],
        seen=all_rows[seen_mask],
        train_subjects=train_subj,
        val_subjects=val_subj,
        test_subjects=present_test,
    )
