"""Stage I: ID feature encoder F_enc^ID + identity-label embeddings (N_subj × C × D) on frozen features."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clile_core.atomic import atomic_path
from clile_core.config import RunConfig
from clile_core.data.fold_data import FoldData
from clile_core.features import FeatureStore
from clile_core.losses import id_loss
from clile_core.models.encoder import FeatureEncoder, au_logits, gaussian_embeddings
from clile_core.names import STAGE1_FILE
from clile_core.diagnostics import ile_silhouettes
from clile_core.training.common import BatchLoss, StageResult, StageRun, finish_stage, fit_on_features, map_features
from clile_core.training.loop import EpochCallback, make_reproducible, select_device



class IdentityModel(nn.Module):
    def __init__(self, token_dim: int, tokens: int, *, n_subjects: int, n_aus: int, cfg: RunConfig):
        super().__init__()
        self.encoder = FeatureEncoder(token_dim, cfg.model, tokens=tokens)
        self.ile = gaussian_embeddings(n_subjects, n_aus, cfg.model.dim)

    def mean_ile(self) -> torch.Tensor:
        """AU embeddings shared by all subjects: the stage-I evaluation head and AU^G's initial value."""
        return F.normalize(self.ile, dim=-1).mean(dim=0)


def train_stage1(
    cfg: RunConfig, data: FoldData, features: FeatureStore, out_dir: Path, *, callback: EpochCallback | None = None
) -> StageResult:
    """Eq. 3: L1 = λ·L_BCE(F_emb^ID · ILE[subject]) + (1−λ)·L_ID, or λ·L_BCE when L_ID is off (the same
    equation without its L_ID term, so A2/A3 and A4/CL-ILE differ by that term only).

    Validation (on held-out subjects, who have no ILE) scores F_emb^ID against the mean ILE; it picks the
    checkpoint only with ``stage1.select: val_f1``.
    """
    make_reproducible(cfg.seed, cfg.deterministic)
    device = select_device(cfg.device)
    s1 = cfg.stage1
    run = StageRun("stage1", cfg, data, device, callback)
    model = IdentityModel(features.token_dim, features.token_count, n_subjects=len(data.split.train_subjects),
                          n_aus=len(data.au_names), cfg=cfg).to(device)
    subject_of = torch.as_tensor(data.subject_index(range(len(data.manifest))), device=device)
    batch_loss = BatchLoss(cfg, data, device)

    def loss_terms(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens, rows = batch
        f_id = model.encoder(tokens.to(device))
        bce = batch_loss.bce(au_logits(f_id, model.ile[subject_of[rows].to(device)]), batch_loss.labels_of(rows))
        if not s1.use_id_loss:
            return {"bce": bce, "loss": s1.lam * bce}
        l_id = id_loss(model.ile.float())
        return {"bce": bce, "id": l_id, "loss": s1.lam * bce + (1 - s1.lam) * l_id}

    fitted, scores = fit_on_features(run, model, stage_cfg=s1, features=features, loss_terms=loss_terms,
                                     logits=lambda t: au_logits(model.encoder(t), model.mean_ile()),
                                     lr_scales={"ile": s1.ile_lr_scale})
    out_dir = Path(out_dir)
    ile = model.ile.detach().cpu()
    with atomic_path(out_dir / STAGE1_FILE) as tmp:
        torch.save({"encoder": model.encoder.state_dict(), "ile": ile, "subjects": data.split.train_subjects}, tmp)
    return finish_stage(run, out_dir, fitted, scores=scores,
                        embed=lambda rows: map_features(features, rows, fn=model.encoder, device=device),
                        extra=ile_silhouettes(ile.numpy()))
