"""Feature encoder (Transformer encoder + pooling) and the CL-ILE heads built on it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clile_core.config import ModelConfig


class FeatureEncoder(nn.Module):
    """Backbone tokens (B, T, Cf) -> one embedding F_emb (B, D); Cf != D is projected by one linear layer.

    With ``model.pos_embedding`` each of the T token positions gets a learned embedding: AUs are local,
    and mean pooling over a Transformer without positions cannot tell where on the h×w map a token sits.
    """

    def __init__(self, in_dim: int, cfg: ModelConfig, *, tokens: int):
        super().__init__()
        self.project = nn.Linear(in_dim, cfg.dim) if in_dim != cfg.dim else nn.Identity()
        self.pos = nn.Parameter(torch.randn(1, tokens, cfg.dim) * 0.02) if cfg.pos_embedding else None
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.ff_dim, cfg.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.pooling = cfg.pooling
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.dim) * 0.02) if cfg.pooling == "cls" else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.project(tokens)
        if self.pos is not None:
            x = x + self.pos
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.encoder(x)
        return x[:, 0] if self.cls is not None else x.mean(dim=1)


def au_logits(f_emb: torch.Tensor, au_emb: torch.Tensor) -> torch.Tensor:
    """p_c = sigmoid(F_emb · AU_c): logits for (B, D) against (C, D) shared or (B, C, D) per-sample embeddings.

    Embeddings are L2-normalised at use ("normalized during training"), so the logit's scale comes
    from F_emb alone.
    """
    au_emb = F.normalize(au_emb, dim=-1)
    if au_emb.dim() == 2:
        return f_emb @ au_emb.t()
    return torch.einsum("bd,bcd->bc", f_emb, au_emb)


def gaussian_embeddings(*shape: int) -> nn.Parameter:
    """ILEs and AU embeddings start Gaussian (paper §3.2); normalisation happens at use.

    The variance is 1/D so rows start near unit norm: the gradient reaching a row through the
    normalisation shrinks with 1/‖row‖, and N(0, 1) rows (norm √D) barely moved in stage I.
    """
    return nn.Parameter(torch.randn(*shape) / math.sqrt(shape[-1]))


class Stage0Model(nn.Module):
    """Backbone + linear AU head on mean-pooled tokens: the pre-training of stage 0 and ablation row A0."""

    def __init__(self, backbone: nn.Module, n_aus: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, n_aus)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).mean(dim=1))
