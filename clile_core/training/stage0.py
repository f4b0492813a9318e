"""Stage 0: backbone + linear AU head trained end to end with weighted BCE (ablation row A0, Table 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from clile_core.atomic import atomic_path
from clile_core.config import RunConfig
from clile_core.data.fold_data import FoldData
from clile_core.data.images import FrameDataset, eval_transform, train_transform
from clile_core.hardware import images_to, loader_options, prepare_image_model
from clile_core.model_io import save_model
from clile_core.models.backbones import create_backbone
from clile_core.models.encoder import Stage0Model
from clile_core.names import BACKBONE_FILE
from clile_core.training.common import BatchLoss, StageResult, finish_stage
from clile_core.training.loop import EpochCallback, Evaluation, autocast, fit, make_reproducible, select_device


def _eval_loader(data: FoldData, rows: np.ndarray, cfg: RunConfig, device: torch.device) -> DataLoader:
    dataset = FrameDataset(data.manifest, data.images_root, rows, data.labels, eval_transform(cfg.data))
    return DataLoader(dataset, batch_size=max(64, cfg.stage0.batch_size), **loader_options(cfg.data.num_workers, device))


@torch.no_grad()
def _map_images(fn: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader, device: torch.device,
                bf16: bool) -> np.ndarray:
    """``fn`` over a loader's centre crops (bf16 autocast on CUDA), read back to the host once."""
    with autocast(device, bf16):
        outputs = [fn(images_to(images, device)).float() for images, _, _ in loader]
    return torch.cat(outputs).cpu().numpy()


def _predict_images(model: Stage0Model, loader: DataLoader, data: FoldData, cfg: RunConfig, device: torch.device) -> Evaluation:
    rows = loader.dataset.rows.numpy()
    return Evaluation(_map_images(lambda x: torch.sigmoid(model(x)), loader, device, cfg.stage0.bf16), data.labels[rows])


def train_stage0(cfg: RunConfig, data: FoldData, out_dir: Path, callback: EpochCallback | None = None) -> StageResult:
    """Writes ``backbone.pt`` (the frozen feature extractor of stages I/II), the A0 model and ``result.json``."""
    make_reproducible(cfg.seed, cfg.deterministic)
    device = select_device(cfg.device)
    model = Stage0Model(create_backbone(cfg.model.backbone, cfg.model.weights), len(data.au_names)).to(device)
    model = prepare_image_model(model, device)
    train_set = FrameDataset(data.manifest, data.images_root, data.split.train, data.labels, train_transform(cfg.data))
    loader = DataLoader(
        train_set, batch_size=cfg.stage0.batch_size, shuffle=True, **loader_options(cfg.data.num_workers, device),
        drop_last=len(train_set) > cfg.stage0.batch_size, generator=torch.Generator().manual_seed(cfg.seed),
    )
    val_loader = _eval_loader(data, data.split.val, cfg, device)  # built once: its workers persist across epochs
    batch_loss = BatchLoss(cfg, data, device)

    def loss_terms(batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images, labels, _ = batch
        bce = batch_loss.bce(model(images_to(images, device)), labels)
        return {"bce": bce, "loss": bce}

    fitted = fit(
        "stage0", model, cfg.stage0, lambda: loader, loss_terms,
        lambda: _predict_images(model, val_loader, data, cfg, device),
        data.au_names, cfg.threshold, device, callback,
    )
    out_dir = Path(out_dir)
    with atomic_path(out_dir / BACKBONE_FILE) as tmp:
        torch.save(model.backbone.state_dict(), tmp)
    save_model(out_dir, "stage0", {"head": model.head.state_dict()}, out_dir / BACKBONE_FILE,
               cfg.model, cfg.data, data.au_names, cfg.threshold)
    # A0 predicts from the pooled backbone features: that is the embedding its identity probe reads
    return finish_stage("stage0", cfg, data, out_dir, fitted,
                        lambda rows: _predict_images(model, _eval_loader(data, rows, cfg, device), data, cfg, device),
                        embed=lambda rows: _map_images(lambda x: model.backbone(x).mean(dim=1),
                                                       _eval_loader(data, rows, cfg, device), device, cfg.stage0.bf16))
