"""Feature cache: the frozen backbone's tokens for every image view, computed once and kept on disk.

Key = hash(backbone checkpoint bytes, manifest hash, input/resize size, view set, dtype). A second run
with the same key loads the tensors (memory-mapped) instead of running the backbone again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from clile_core.atomic import atomic_dir
from clile_core.config import RunConfig
from clile_core.data.digests import file_hash
from clile_core.data.fold_data import FoldData
from clile_core.data.images import FrameDataset, ViewTransform, view_names
from clile_core.models.backbones import Backbone

import numpy as np


def cache_key(backbone_hash: str, manifest_hash: str, cfg: RunConfig) -> str:
    spec = {
        "backbone": backbone_hash,
        "manifest": manifest_hash,
        "input_size": cfg.data.input_size,
        "resize": cfg.data.resize,
        "views": view_names(cfg.features.random_crops),
        "crops": "per-image",  # random-crop offsets are drawn per image (they were per view before)
        "dtype": cfg.features.dtype,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class FeatureStore:
    """Tokens per view, each (frames, T, Cf), indexed by manifest row."""

    key: str
    path: Path
    views: dict[str, torch.Tensor]
    hit: bool  # True when loaded from disk, False when computed by this call

    @property
    def token_dim(self) -> int:
        return next(iter(self.views.values())).shape[-1]

    @property
    def token_count(self) -> int:
        return next(iter(self.views.values())).shape[1]

    def gather(self, rows: np.ndarray | torch.Tensor, view: str = "centre") -> torch.Tensor:
        return self.views[view][torch.as_tensor(rows, dtype=torch.long)].float()

    def gather_mixed(self, rows: torch.Tensor, view_ids: torch.Tensor, names: list[str]) -> torch.Tensor:
        """Per-sample view choice: the cached analogue of random crop + flip augmentation."""
        out = torch.empty((len(rows), *self.views[names[0]].shape[1:]), dtype=torch.float32)
        for vid, name in enumerate(names):
            pick = view_ids == vid
            if pick.any():
                out[pick] = self.views[name][rows[pick]].float()
        return out


def _load(path: Path, key: str) -> FeatureStore | None:
    meta_file = path / "meta.json"
    if not meta_file.exists():
        return None
    meta = json.loads(meta_file.read_text())
    views = {name: torch.load(path / f"{name}.pt", mmap=True, weights_only=True) for name in meta["views"]}
    return FeatureStore(key, path, views, hit=True)


class CacheSpaceError(ValueError):
    """The feature cache would not fit on its disk; raised before extraction starts."""


@torch.no_grad()
def estimated_bytes(backbone: Backbone, frames: int, views: int, cfg: RunConfig, device: torch.device) -> int:
    """Bytes the cache will take: one probe image gives the token grid (T, Cf) at this input size."""
    probe = torch.zeros(1, 3, cfg.data.input_size, cfg.data.input_size, device=device)
    tokens, dim = backbone(probe).shape[1:]
    return frames * views * tokens * dim * getattr(torch, cfg.features.dtype).itemsize


def check_space(folder: Path, need: int, what: str) -> None:
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if need > free:  # refuse now rather than die hours into extraction with a full disk
        raise CacheSpaceError(
            f"the feature cache needs {need / 2**30:.1f} GiB ({what}) but {existing} has {free / 2**30:.1f} GiB free; "
            "free space there, point the cache at a larger disk (features.cache_dir, or --store for the orchestrator), "
            "or shrink it: features.random_crops=0 (centre + flip only) or a backbone with fewer channels"
        )


@torch.no_grad()
def _compute(backbone: Backbone, data: FoldData, cfg: RunConfig, view: str, device: torch.device) -> torch.Tensor:
    rows = np.arange(len(data.manifest))
    dataset = FrameDataset(data.manifest, data.images_root, rows, data.labels, ViewTransform(cfg.data, view))
    loader = DataLoader(dataset, batch_size=max(64, cfg.stage0.batch_size), num_workers=cfg.data.num_workers)
    dtype = getattr(torch, cfg.features.dtype)
    chunks = []
    for images, _, _ in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            chunks.append(backbone(images.to(device)).to(dtype).cpu())
    return torch.cat(chunks)


def load_or_compute(backbone: Backbone, backbone_ckpt: Path, data: FoldData, cfg: RunConfig, device: torch.device) -> FeatureStore:
    """Return the cached features for this backbone checkpoint and manifest, computing them on a miss."""
    key = cache_key(file_hash(backbone_ckpt), data.manifest_hash, cfg)
    path = Path(cfg.features.cache_dir) / key
    cached = _load(path, key)
    if cached is not None:
        print(f"[features] cache hit {path}", file=sys.stderr)
        return cached
    backbone = backbone.to(device).eval()
    names = view_names(cfg.features.random_crops)
    need = estimated_bytes(backbone, len(data.manifest), len(names), cfg, device)
    check_space(path.parent, need, f"{len(data.manifest)} frames x {len(names)} views, {cfg.features.dtype}")
    start = time.time()
    with atomic_dir(path) as tmp:
        for name in names:
            torch.save(_compute(backbone, data, cfg, name, device), tmp / f"{name}.pt")
            print(f"[features] view {name}: {len(data.manifest)} frames ({time.time() - start:.0f}s)", file=sys.stderr)
        (tmp / "meta.json").write_text(json.dumps({"key": key, "views": names, "frames": len(data.manifest)}))
    loaded = _load(path, key)
    assert loaded is not None
    return FeatureStore(key, path, loaded.views, hit=False)
