"""Everything a stage needs about one fold: the manifest, labels, the split and subject indices."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clile_core.config import DataConfig
from clile_core.data.folds import FoldSplit, split_fold
from clile_core.data.digests import images_digest
from clile_core.data.manifest import au_columns, manifest_hash, read_manifest
from clile_core.datasets import get_dataset


@dataclass
class FoldData:
    dataset: str
    fold: int
    manifest: pd.DataFrame
    images_root: Path
    labels: np.ndarray  # (frames, AUs) in {1, 0, -1}
    au_names: list[str]
    split: FoldSplit
    manifest_hash: str  # the manifest's rows and the content of its images (see data_hash)

    def subject_index(self, rows: np.ndarray) -> np.ndarray:
        """Index of each row's subject among the training subjects (the ILE row); -1 for others."""
        lookup = {s: i for i, s in enumerate(self.split.train_subjects)}
        return np.array([lookup.get(s, -1) for s in self.manifest["subject"].to_numpy()[rows]], dtype=np.int64)


def resolve_manifest(cfg: DataConfig) -> tuple[Path, Path]:
    """(manifest file, images root) for the configured dataset, building it if the dataset makes its own."""
    spec = get_dataset(cfg.dataset)
    if spec.make_data is not None:
        return spec.make_data(cfg)
    if not cfg.manifest or not cfg.images:
        raise ValueError(
            f"dataset {cfg.dataset} needs data.manifest and data.images (e.g. --set data.manifest={cfg.dataset}.csv "
            f"--set data.images=/data/{cfg.dataset}/images); write the manifest with `python -m clile_core.data.prepare`"
        )
    return Path(cfg.manifest), Path(cfg.images)


def data_hash(manifest: pd.DataFrame, images_root: Path, cache_dir: str | Path) -> str:
    """What a unit's output depends on in the data: the manifest's rows and its images' pixels. Per-image
    content hashes are cached under ``cache_dir`` (the feature cache's folder), keyed by the manifest."""
    rows = manifest_hash(manifest)
    cache_file = Path(cache_dir) / "image_digests" / f"{rows}.json"
    pixels = images_digest(Path(images_root), manifest["image"].astype(str).tolist(), cache_file)
    return hashlib.sha256(f"{rows}:{pixels}".encode()).hexdigest()[:16]


def load_fold_data(cfg: DataConfig, fold: int, cache_dir: str | Path) -> FoldData:
    manifest_path, images_root = resolve_manifest(cfg)
    manifest = read_manifest(manifest_path).reset_index(drop=True)
    aus = au_columns(manifest)
    split = split_fold(manifest, cfg.dataset, fold, val_fraction=cfg.val_fraction, seen_fraction=cfg.seen_fraction,
                       seed=cfg.split_seed)
    return FoldData(
        dataset=cfg.dataset,
        fold=fold,
        manifest=manifest,
        images_root=images_root,
        labels=manifest[aus].to_numpy(dtype=np.int64),
        au_names=aus,
        split=split,
        manifest_hash=data_hash(manifest, images_root, cache_dir),
    )
