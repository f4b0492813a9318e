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
from clile_core.model_io import save_model
from clile_core.models.backbones import create_backbone
from clile_core.models.encoder import Stage0Model
from clile_core.training.common import BatchLoss, StageResult, finish_stage
from clile_core.training.loop import EpochCallback, Evaluation, fit, make_reproducible, select_device

BACKBONE_FILE = "backbone.pt"


@torch.no_grad()
def _map_images(fn: Callable[[torch.Tensor], torch.Tensor], data: FoldData, rows: np.ndarray, cfg: RunConfig,
                device: torch.device) -> np.ndarray:
    """``fn`` over the centre crops of ``rows``."""
    dataset = FrameDataset(data.manifest, data.images_root, rows, data.labels, eval_transform(cfg.data))
    loader = DataLoader(dataset, batch_size=max(64, cfg.stage0.batch_size), num_workers=cfg.data.num_workers)
    return torch.cat([fn(images.to(device)).float().cpu() for images, _, _ in loader]).numpy()


def _predict_images(model: Stage0Model, data: FoldData, rows: np.ndarray, cfg: RunConfig, device: torch.device) -> Evaluation:
    return Evaluation(_map_images(lambda x: torch.sigmoid(model(x)), data, rows, cfg, device), data.labels[rows])


def train_stage0(cfg: RunConfig, data: FoldData, out_dir: Path, callback: EpochCallback | None = None) -> StageResult:
    """Writes ``backbone.pt`` (the frozen feature extractor of stages I/II), the A0 model and ``result.json``."""
    make_reproducible(cfg.seed, cfg.deterministic)
    device = select_device(cfg.device)
    model = Stage0Model(create_backbone(cfg.model.backbone, cfg.model.weights), len(data.au_names)).to(device)
    train_set = FrameDataset(data.manifest, data.images_root, data.split.train, data.labels, train_transform(cfg.data))
    loader = DataLoader(
        train_set, batch_size=cfg.stage0.batch_size, shuffle=True, num_workers=cfg.data.num_workers,
        drop_last=len(train_set) > cfg.stage0.batch_size, generator=torch.Generator().manual_seed(cfg.seed),
    )
    batch_loss = BatchLoss(cfg, data, device)

    def loss_terms(batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images, labels, _ = batch
        bce = batch_loss.bce(model(images.to(device)), labels)
        return {"bce": bce, "loss": bce}

    fitted = fit(
        "stage0", model, cfg.stage0, lambda: loader, loss_terms,
        lambda: _predict_images(model, data, data.split.val, cfg, device),
        data.au_names, cfg.threshold, device, callback,
    )
    out_dir = Path(out_dir)
    with atomic_path(out_dir / BACKBONE_FILE) as tmp:
        torch.save(model.backbone.state_dict(), tmp)
    save_model(out_dir, "stage0", {"head": model.head.state_dict()}, out_dir / BACKBONE_FILE,
               cfg.model, cfg.data, data.au_names, cfg.threshold)
    # A0 predicts from the pooled backbone features: that is the embedding its identity probe reads
    return finish_stage("stage0", cfg, data, out_dir, fitted, lambda rows: _predict_images(model, data, rows, cfg, device),
                        embed=lambda rows: _map_images(lambda x: model.backbone(x).mean(dim=1), data, rows, cfg, device))
