"""CL-ILE losses, one pure function each (equation numbers follow the paper; see PAPER.md).

Labels everywhere are float/int tensors of shape (N, C) holding 1, 0 or -1; -1 (not coded) is
masked out of every loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _coded(labels: torch.Tensor) -> torch.Tensor:
    return labels >= 0


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 2: mean over coded (sample, AU) entries of w · BCE(sigmoid(logit), y).

    ``weights`` broadcasts against (N, C): per-AU (C,) or per-entry (N, C); ``None`` is the plain mean.
    """
    mask = _coded(labels)
    target = labels.clamp(min=0).to(logits.dtype)
    per_entry = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if weights is not None:
        per_entry = per_entry * weights.to(per_entry.dtype)
    per_entry = per_entry * mask
    return per_entry.sum() / mask.sum().clamp(min=1)


def selective_learning_weights(labels: torch.Tensor, max_weight: float = 10.0) -> torch.Tensor:
    """Eq. 2's w_c: Selective Learning (Hand et al. 2018) towards a uniform 50/50 target.

    Per batch and per AU, with r the batch's positive rate among coded entries, positives get
    0.5 / r and negatives 0.5 / (1 - r); clipping to ``max_weight`` keeps a batch with one rare
    positive from dominating. AUs with no positive or no negative in the batch keep weight 1,
    since there is nothing to re-balance.
    """
    mask = _coded(labels).float()
    positives = (labels == 1).float()
    coded = mask.sum(0)
    rate = positives.sum(0) / coded.clamp(min=1)
    balanced = (rate > 0) & (rate < 1)
    safe_rate = rate.clamp(1e-6, 1 - 1e-6)
    w_pos = torch.where(balanced, 0.5 / safe_rate, torch.ones_like(rate)).clamp(max=max_weight)
    w_neg = torch.where(balanced, 0.5 / (1 - safe_rate), torch.ones_like(rate)).clamp(max=max_weight)
    return positives * w_pos + (1 - positives) * w_neg


def inverse_frequency_weights(labels: torch.Tensor) -> torch.Tensor:
    """Eq. 2's alternative w_c = 1 / rate_c over the training fold, normalised to mean 1 (as ME-GraphAU)."""
    coded = _coded(labels).float().sum(0)
    rate = (labels == 1).float().sum(0) / coded.clamp(min=1)
    # An AU with no positive would get an infinite weight; one positive's worth is the honest floor.
    inv = 1.0 / rate.clamp(min=1.0 / coded.clamp(min=1).max())
    return inv / inv.mean()


def id_loss(ile: torch.Tensor) -> torch.Tensor:
    """Eq. 1 (stated intent, see PAPER.md): pull one subject's C embeddings together, push the
    same AU of different subjects apart.

    ile: (N subjects, C AUs, D). L_ID = log( Σ_ij |sim(ILE_ij, mean_subjects_j)| / Σ_ij |sim(ILE_ij, mean_AUs_i)| ),
    on the L2-normalised ILEs ("normalized during training"): the means are of unit vectors, so the loss
    depends on directions only and cannot be lowered by changing norms.
    """
    ile = F.normalize(ile, dim=-1)
    per_au_mean = ile.mean(dim=0, keepdim=True)  # (1, C, D): the AU shared by all subjects
    per_subject_mean = ile.mean(dim=1, keepdim=True)  # (N, 1, D): the subject's centre
    across_subjects = F.cosine_similarity(ile, per_au_mean.expand_as(ile), dim=-1).abs().sum()
    within_subject = F.cosine_similarity(ile, per_subject_mean.expand_as(ile), dim=-1).abs().sum()
    return torch.log(across_subjects / within_subject)


def orth_loss(f_id: torch.Tensor, f_g: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 4: mean over the batch of log(|sim(F_emb^ID, F_emb^G)| + eps); eps keeps it finite."""
    return torch.log(F.cosine_similarity(f_id, f_g, dim=-1).abs() + eps).mean()


def contrastive_loss(f_g: torch.Tensor, au_emb: torch.Tensor, labels: torch.Tensor, tau: float = 2.0) -> torch.Tensor:
    """Eq. 5: multi-label supervised contrastive loss with F_emb^G as anchor.

    For each positive AU p: -log softmax_c(sim(F_emb^G, AU_c) / tau)[p], averaged over the sample's
    positives, then over the samples with at least one positive (the others are skipped). An uncoded
    AU (-1) is neither positive nor negative: it is left out of the softmax's denominator too.
    """
    sims = F.cosine_similarity(f_g.unsqueeze(1), au_emb.unsqueeze(0), dim=-1) / tau  # (N, C)
    log_prob = F.log_softmax(sims.masked_fill(~_coded(labels), float("-inf")), dim=1)
    positives = labels == 1
    n_pos = positives.sum(1)
    has_pos = n_pos > 0
    # where() rather than a product: uncoded entries hold -inf, and -inf * 0 would be NaN
    per_sample = -torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos.clamp(min=1)
    # A sum over the samples with positives divided by their count, not a boolean selection: selecting
    # (or testing has_pos.any()) would make the host wait for the GPU at every step. A batch without
    # positives gives 0 and still backpropagates.
    return torch.where(has_pos, per_sample, torch.zeros_like(per_sample)).sum() / has_pos.sum().clamp(min=1)
