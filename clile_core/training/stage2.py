"""Stage II: general encoder F_enc^G + AU embeddings AU^G, made orthogonal to the frozen F_enc^ID."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clile_core.config import RunConfig
from clile_core.data.fold_data import FoldData
from clile_core.features import FeatureStore
from clile_core.losses import contrastive_loss, orth_loss
from clile_core.model_io import save_model
from clile_core.models.encoder import FeatureEncoder, au_logits, gaussian_embeddings
from clile_core.diagnostics import ile_silhouettes
from clile_core.training.common import BatchLoss, StageResult, StageRun, finish_stage, fit_on_features, map_features
from clile_core.training.loop import EpochCallback, make_reproducible, select_device
from clile_core.names import STAGE1_FILE


class GeneralModel(nn.Module):
    def __init__(self, token_dim: int, tokens: int, n_aus: int, cfg: RunConfig):
        super().__init__()
        self.encoder = FeatureEncoder(token_dim, cfg.model, tokens=tokens)
        self.au = gaussian_embeddings(n_aus, cfg.model.dim)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return au_logits(self.encoder(tokens), self.au)


def _init_from_stage1(model: GeneralModel, stage1: dict, *, features: FeatureStore, cfg: RunConfig,
                      device: torch.device) -> FeatureEncoder:
    """Frozen F_enc^ID from stage I; F_enc^G and AU^G optionally start from it (PAPER.md defaults)."""
    id_encoder = FeatureEncoder(features.token_dim, cfg.model, tokens=features.token_count)
    id_encoder.load_state_dict(stage1["encoder"])
    id_encoder.requires_grad_(False)
    if cfg.stage2.init_from_stage1:
        model.encoder.load_state_dict(stage1["encoder"])
    if cfg.stage2.au_init == "mean_ile":
        with torch.no_grad():
            model.au.copy_(F.normalize(stage1["ile"], dim=-1).mean(dim=0))
    return id_encoder.to(device).eval()


def train_stage2(
    cfg: RunConfig, data: FoldData, features: FeatureStore, out_dir: Path, *, backbone_ckpt: Path,
    stage1_dir: Path | None = None, callback: EpochCallback | None = None,
) -> StageResult:
    """Eq. 6: L2 = λ1·L_BCE + λ2·L_Orth + λ3·L_Contra, each switchable (ablation rows A1–CL-ILE).

    ``backbone_ckpt`` is only recorded by the saved model (serving runs the backbone before F_enc^G)."""
    s2 = cfg.stage2
    if s2.use_orth and stage1_dir is None:
        raise ValueError("stage II with L_Orth needs a stage-I model (F_enc^ID); turn stage I on or use_orth off")
    make_reproducible(cfg.seed, cfg.deterministic)
    device = select_device(cfg.device)
    run = StageRun("stage2", cfg, data, device, callback)
    model = GeneralModel(features.token_dim, features.token_count, len(data.au_names), cfg)
    id_encoder = None
    ile_metrics: dict[str, float] = {}
    if stage1_dir is not None:
        stage1 = torch.load(Path(stage1_dir) / STAGE1_FILE, map_location="cpu", weights_only=True)
        id_encoder = _init_from_stage1(model, stage1, features=features, cfg=cfg, device=device)
        ile_metrics = ile_silhouettes(stage1["ile"].numpy())  # the ILEs this model was built on, beside its F1
    model.to(device)
    batch_loss = BatchLoss(cfg, data, device)

    def loss_terms(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens, rows = batch
        tokens, labels = tokens.to(device), batch_loss.labels_of(rows)
        f_g = model.encoder(tokens)
        bce = batch_loss.bce(au_logits(f_g, model.au), labels)
        terms = {"bce": bce}
        total = s2.lambda1 * bce
        if s2.use_orth:
            with torch.no_grad():
                f_id = id_encoder(tokens)
            terms["orth"] = orth_loss(f_id.float(), f_g.float(), s2.orth_eps)
            total = total + s2.lambda2 * terms["orth"]
        if s2.use_contra:
            terms["contra"] = contrastive_loss(f_g.float(), model.au.float(), labels, s2.tau)
            total = total + s2.lambda3 * terms["contra"]
        terms["loss"] = total
        return terms

    fitted, scores = fit_on_features(run, model, stage_cfg=s2, features=features, loss_terms=loss_terms,
                                     logits=model.logits)
    out_dir = Path(out_dir)
    save_model(out_dir, kind="clile", weights={"encoder": model.encoder.state_dict(), "au_embeddings": model.au.detach().cpu()},
               backbone_ckpt=backbone_ckpt, model_cfg=cfg.model, data_cfg=cfg.data, au_names=data.au_names,
               threshold=cfg.threshold)
    return finish_stage(run, out_dir, fitted, scores=scores,
                        embed=lambda rows: map_features(features, rows, fn=model.encoder, device=device), extra=ile_metrics)
