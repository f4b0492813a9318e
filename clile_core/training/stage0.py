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
from clile_core.training.common import BatchLoss, StageResult, StageRun, finish_stage
from clile_core.training.loop import EpochCallback, Evaluation, autocast, fit, make_reproducible, select_device


def _eval_loader(data: FoldData, rows: np.ndarray, cfg: RunConfig, device: torch.device) -> DataLoader:
    dataset = FrameDataset(data.manifest, data.images_root, rows, labels=data.labels, transform=eval_transform(cfg.data))
    return DataLoader(dataset, batch_size=max(64, cfg.stage0.batch_size), **loader_options(cfg.data.num_workers, device))


def train_loader(data: FoldData, cfg: RunConfig, device: torch.device) -> DataLoader:
    """Shuffled, augmented uint8 batches of the training rows (``bench/gpu_throughput.py`` times it alone too)."""
    train_set = FrameDataset(data.manifest, data.images_root, data.split.train, labels=data.labels,
                             transform=train_transform(cfg.data))
    return DataLoader(
        train_set, batch_size=cfg.stage0.batch_size, shuffle=True, **loader_options(cfg.data.num_workers, device),
        drop_last=len(train_set) > cfg.stage0.batch_size, generator=torch.Generator().manual_seed(cfg.seed),
    )


@torch.no_grad()
def _map_images(loader: DataLoader, *, fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                bf16: bool) -> np.ndarray:
    """``fn`` over a loader's centre crops (bf16 autocast on CUDA), read back to the host once."""
    with autocast(device, bf16):
        outputs = [fn(images_to(images, device)).float() for images, _, _ in loader]
    return torch.cat(outputs).cpu().numpy()


def _predict_images(model: Stage0Model, loader: DataLoader, run: StageRun) -> Evaluation:
    rows = loader.dataset.rows.numpy()
    probs = _map_images(loader, fn=lambda x: torch.sigmoid(model(x)), device=run.device, bf16=run.cfg.stage0.bf16)
    return Evaluation(probs, run.data.labels[rows])


def train_stage0(cfg: RunConfig, data: FoldData, out_dir: Path, callback: EpochCallback | None = None) -> StageResult:
    """Writes ``backbone.pt`` (the frozen feature extractor of stages I/II), the A0 model and ``result.json``."""
    make_reproducible(cfg.seed, cfg.deterministic)
    device = select_device(cfg.device)
    run = StageRun("stage0", cfg, data, device, callback)
    model = Stage0Model(create_backbone(cfg.model.backbone, cfg.model.weights), len(data.au_names)).to(device)
    model = prepare_image_model(model, device)
    loader = train_loader(data, cfg, device)
    val_loader = _eval_loader(data, data.split.val, cfg, device)  # built once: its workers persist across epochs
    batch_loss = BatchLoss(cfg, data, device)

    def loss_terms(batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images, labels, _ = batch
        bce = batch_loss.bce(model(images_to(images, device)), labels)
        return {"bce": bce, "loss": bce}

    fitted = fit(
        model, cfg.stage0, stage=run.stage, train_batches=lambda: loader, loss_terms=loss_terms,
        validate=lambda: _predict_images(model, val_loader, run), au_names=data.au_names, threshold=cfg.threshold,
        device=device, callback=callback,
    )
    out_dir = Path(out_dir)
    with atomic_path(out_dir / BACKBONE_FILE) as tmp:
        torch.save(model.backbone.state_dict(), tmp)
    save_model(out_dir, kind="stage0", weights={"head": model.head.state_dict()}, backbone_ckpt=out_dir / BACKBONE_FILE,
               model_cfg=cfg.model, data_cfg=cfg.data, au_names=data.au_names, threshold=cfg.threshold)
    # A0 predicts from the pooled backbone features: that is the embedding its identity probe reads
    return finish_stage(run, out_dir, fitted,
                        scores=lambda rows: _predict_images(model, _eval_loader(data, rows, cfg, device), run),
                        embed=lambda rows: _map_images(_eval_loader(data, rows, cfg, device),
                                                       fn=lambda x: model.backbone(x).mean(dim=1), device=device,
                                                       bf16=cfg.stage0.bf16))
