"""Feature cache: the frozen backbone's tokens for every image view, computed once and kept on disk.

Key = hash(backbone checkpoint bytes, manifest hash, input/resize size, view set, dtype). A second run
with the same key loads the tensors (memory-mapped) instead of running the backbone again.

Stages I/II read the cache in one of two ways: streaming, gathering each batch from the memory-mapped
files on the CPU, or resident (``ResidentFeatures``), the rows they use copied once to the GPU where
batches are drawn by index; ``for_training`` picks one from the trial's GPU memory budget.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader

from clile_core.atomic import atomic_dir
from clile_core.config import FeatureConfig, RunConfig
from clile_core.data.digests import file_hash
from clile_core.data.fold_data import FoldData
from clile_core.data.images import FrameDataset, ViewTransform, view_names
from clile_core.hardware import gpu_budget_bytes, images_to, loader_options, prepare_image_model
from clile_core.log import get_logger
from clile_core.models.backbones import Backbone
from clile_core.names import FEATURES_MARKER

log = get_logger("features")

GPU_EXTRACTION_BATCH = 256  # inference only: a larger batch fills the GPU, the results do not depend on it


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

    @property
    def device(self) -> torch.device:
        """Where gathered batches come from; the memory-mapped cache is on the CPU."""
        return torch.device("cpu")

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


class ResidentFeatures(FeatureStore):
    """Some rows of every view copied once to ``device``: batches are then drawn there by index, with no
    host-to-device copy and no host synchronisation per step. Same batches as the store it copies."""

    def __init__(self, store: FeatureStore, rows: np.ndarray, *, names: list[str], device: torch.device,
                 chunk: int = 4096):
        rows_t = torch.as_tensor(np.sort(rows), dtype=torch.long)
        first = store.views[names[0]]
        self.stacked = torch.empty((len(names), len(rows_t), *first.shape[1:]), dtype=first.dtype, device=device)
        for v, name in enumerate(names):
            for start in range(0, len(rows_t), chunk):  # chunks bound the host copy the gather makes
                part = rows_t[start : start + chunk]
                self.stacked[v, start : start + len(part)] = store.views[name][part].to(device)
        # manifest row -> position in ``stacked``, -1 if not copied; a host copy checks evaluation requests
        self.host_slots = torch.full((first.shape[0],), -1, dtype=torch.long)
        self.host_slots[rows_t] = torch.arange(len(rows_t))
        self.slots = self.host_slots.to(device)
        self.names = list(names)
        super().__init__(store.key, store.path, {name: self.stacked[v] for v, name in enumerate(names)}, store.hit)

    @staticmethod
    def nbytes(store: FeatureStore, rows: int, names: list[str]) -> int:
        first = store.views[names[0]]
        return len(names) * rows * first[0].numel() * first.element_size() + first.shape[0] * 8

    @property
    def device(self) -> torch.device:
        return self.stacked.device

    def gather(self, rows: np.ndarray | torch.Tensor, view: str = "centre") -> torch.Tensor:
        """Evaluation batches: rows given on the host, checked to be resident (slot -1 would wrap around)."""
        slots = self.host_slots[torch.as_tensor(rows, dtype=torch.long).cpu()]
        if (slots < 0).any():
            raise ValueError("rows requested from resident features that were not copied to the device")
        return self.views[view][slots.to(self.device)].float()

    def gather_mixed(self, rows: torch.Tensor, view_ids: torch.Tensor, names: list[str]) -> torch.Tensor:
        """Training batches, rows and view ids on the device: one advanced index over (view, slot), without
        the per-view masks whose .any() would wait for the GPU at every step."""
        if names != self.names:
            raise ValueError(f"views {names} requested from resident features holding {self.names}")
        return self.stacked[view_ids.to(self.device), self.slots[rows.to(self.device)]].float()


def for_training(store: FeatureStore, rows: np.ndarray, *, names: list[str], device: torch.device,
                 cfg: FeatureConfig) -> FeatureStore:
    """The store stages I/II draw ``rows`` from: resident on ``device`` when ``features.resident`` says so
    ('always', or 'auto' on CUDA when the copy fits ``resident_memory`` of the trial's GPU share),
    otherwise ``store`` itself, streamed from disk."""
    if cfg.resident == "never" or (cfg.resident == "auto" and device.type != "cuda"):
        return store
    need = ResidentFeatures.nbytes(store, len(rows), names)
    if cfg.resident == "auto":
        budget = gpu_budget_bytes(device, cfg.resident_memory)
        if need > budget:
            log.info("streaming from the cache: %d rows × %d views need %.2f GiB, over the GPU budget %.2f GiB "
                     "(features.resident_memory=%s of the trial's share)", len(rows), len(names), need / 2**30,
                     budget / 2**30, cfg.resident_memory)
            return store
    log.info("%d rows × %d views resident on %s (%.2f GiB)", len(rows), len(names), device, need / 2**30)
    return ResidentFeatures(store, rows, names=names, device=device)


def _load(path: Path, key: str) -> FeatureStore | None:
    meta_file = path / FEATURES_MARKER
    if not meta_file.exists():
        return None
    meta = json.loads(meta_file.read_text())
    views = {name: torch.load(path / f"{name}.pt", mmap=True, weights_only=True) for name in meta["views"]}
    return FeatureStore(key, path, views, hit=True)


class CacheSpaceError(ValueError):
    """The feature cache would not fit on its disk; raised before extraction starts."""


@torch.no_grad()
def estimated_bytes(backbone: Backbone, *, frames: int, views: int, cfg: RunConfig, device: torch.device) -> int:
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
def _compute(backbone: Backbone, *, data: FoldData, cfg: RunConfig, view: str, device: torch.device) -> torch.Tensor:
    rows = np.arange(len(data.manifest))
    dataset = FrameDataset(data.manifest, data.images_root, rows, labels=data.labels,
                           transform=ViewTransform(cfg.data, view))
    batch_size = max(GPU_EXTRACTION_BATCH if device.type == "cuda" else 64, cfg.stage0.batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, **loader_options(cfg.data.num_workers, device))
    dtype = getattr(torch, cfg.features.dtype)
    chunks = []
    for images, _, _ in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            # non-blocking copies back land in pinned memory; the synchronize below makes them readable
            chunks.append(backbone(images_to(images, device)).to(dtype).to("cpu", non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return torch.cat(chunks)


def load_or_compute(backbone: Backbone, backbone_ckpt: Path, *, data: FoldData, cfg: RunConfig,
                    device: torch.device) -> FeatureStore:
    """Return the cached features for this backbone checkpoint and manifest, computing them on a miss."""
    key = cache_key(file_hash(backbone_ckpt), data.manifest_hash, cfg)
    path = Path(cfg.features.cache_dir) / key
    cached = _load(path, key)
    if cached is None:
        # Several units of a fold may miss together (their stage 0 was trained by a command that read no features):
        # one computes, the others wait here and load its result instead of computing it again.
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.parent / f".{key}.lock"):
            cached = _load(path, key)
            if cached is None:
                return _compute_views(backbone, key=key, path=path, data=data, cfg=cfg, device=device)
    log.info("cache hit %s", path)
    return cached


def _compute_views(backbone: Backbone, *, key: str, path: Path, data: FoldData, cfg: RunConfig,
                   device: torch.device) -> FeatureStore:
    backbone = prepare_image_model(backbone.to(device).eval(), device)
    names = view_names(cfg.features.random_crops)
    need = estimated_bytes(backbone, frames=len(data.manifest), views=len(names), cfg=cfg, device=device)
    check_space(path.parent, need, f"{len(data.manifest)} frames x {len(names)} views, {cfg.features.dtype}")
    start = time.time()
    with atomic_dir(path) as tmp:
        for name in names:
            torch.save(_compute(backbone, data=data, cfg=cfg, view=name, device=device), tmp / f"{name}.pt")
            log.info("view %s: %d frames (%.0fs)", name, len(data.manifest), time.time() - start)
        (tmp / FEATURES_MARKER).write_text(json.dumps({"key": key, "views": names, "frames": len(data.manifest)}))
    loaded = _load(path, key)
    assert loaded is not None
    return FeatureStore(key, path, loaded.views, hit=False)
