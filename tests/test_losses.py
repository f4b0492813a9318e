import math

import pytest
import torch

from clile_core.losses import (
    contrastive_loss,
    id_loss,
    inverse_frequency_weights,
    orth_loss,
    selective_learning_weights,
    weighted_bce,
)


def test_weighted_bce_masks_uncoded_and_applies_weights():
    logits = torch.tensor([[0.0, 2.0], [0.0, -1.0]])
    labels = torch.tensor([[1, -1], [0, 1]])
    # coded entries: BCE(0,1)=ln2, BCE(0,0)=ln2, BCE(-1,1)=ln(1+e)
    expected = (2 * math.log(2) + math.log(1 + math.e)) / 3
    assert weighted_bce(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    weights = torch.tensor([[2.0, 100.0], [1.0, 3.0]])
    expected_w = (2 * math.log(2) + math.log(2) + 3 * math.log(1 + math.e)) / 3
    assert weighted_bce(logits, labels, weights).item() == pytest.approx(expected_w, rel=1e-6)


def test_weighted_bce_all_uncoded_is_zero_not_nan():
    assert weighted_bce(torch.randn(3, 2), -torch.ones(3, 2)).item() == 0.0


def test_selective_learning_rebalances_to_half():
    labels = torch.tensor([[1, 1], [0, 1], [0, -1], [0, 0]])
    w = selective_learning_weights(labels)
    # AU0: r = 1/4 -> positives 0.5/0.25 = 2, negatives 0.5/0.75; AU1: r = 2/3 over coded entries
    assert w[:, 0].tolist() == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3])
    assert w[0, 1].item() == pytest.approx(0.75) and w[3, 1].item() == pytest.approx(1.5)
    # the re-weighted positive mass equals the negative mass (uniform target distribution)
    pos = (labels[:, 0] == 1).float()
    assert (w[:, 0] * pos).sum().item() == pytest.approx((w[:, 0] * (1 - pos)).sum().item())


def test_selective_learning_clips_and_leaves_single_class_alone():
    labels = torch.zeros(100, 2, dtype=torch.long)
    labels[0, 0] = 1
    w = selective_learning_weights(labels, max_weight=10.0)
    assert w[0, 0].item() == 10.0  # 0.5 / 0.01 = 50, clipped
    assert torch.all(w[:, 1] == 1.0)  # no positive in the batch: nothing to re-balance


def test_inverse_frequency_weights_normalised():
    labels = torch.tensor([[1, 1], [0, 0], [1, 0], [0, 0]])
    w = inverse_frequency_weights(labels)
    assert w.tolist() == pytest.approx([2 / 3, 4 / 3])
    assert w.mean().item() == pytest.approx(1.0)


def test_id_loss_hand_values():
    clustered = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    spread = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    assert id_loss(clustered).item() == pytest.approx(math.log(math.sqrt(0.5)), rel=1e-5)
    assert id_loss(spread).item() == pytest.approx(-math.log(math.sqrt(0.5)), rel=1e-5)


def test_id_loss_depends_on_directions_only():
    torch.manual_seed(0)
    ile = torch.randn(4, 3, 8)
    scales = torch.rand(4, 3, 1) * 10 + 0.1  # every embedding rescaled by its own factor
    assert id_loss(ile * scales).item() == pytest.approx(id_loss(ile).item(), rel=1e-5)


def test_minimising_id_loss_gives_subject_clusters():
    torch.manual_seed(0)
    ile = torch.randn(6, 5, 16, requires_grad=True)
    opt = torch.optim.Adam([ile], lr=0.05)
    start = id_loss(ile).item()
    for _ in range(300):
        opt.zero_grad()
        loss = id_loss(ile)
        loss.backward()
        opt.step()
    assert loss.item() < start - 0.5
    unit = torch.nn.functional.normalize(ile.detach(), dim=-1)
    sims = torch.einsum("icd,jkd->ijck", unit, unit)  # subject i AU c vs subject j AU k
    off_diagonal = ~torch.eye(5, dtype=torch.bool)
    within = torch.stack([sims[i, i][off_diagonal] for i in range(6)]).mean()
    across = torch.stack([sims[i, j] for i in range(6) for j in range(6) if i != j]).mean()
    assert within > 0.5 and across < 0.1
    # every embedding lies nearest to its own subject's centroid: the clusters of Fig. 3
    centroids = torch.nn.functional.normalize(unit.mean(1), dim=-1)
    nearest = torch.einsum("icd,jd->icj", unit, centroids).argmax(-1)
    assert torch.equal(nearest, torch.arange(6).unsqueeze(1).expand(6, 5))


def test_orth_loss_value_and_falls_towards_orthogonality():
    f_id = torch.tensor([[1.0, 0.0]])
    assert orth_loss(f_id, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(math.log(math.sqrt(0.5) + 1e-6), rel=1e-6)
    values = [orth_loss(f_id, torch.tensor([[math.cos(a), math.sin(a)]])).item() for a in (0.0, 0.5, 1.0, 1.5)]
    assert values == sorted(values, reverse=True)
    assert math.isfinite(orth_loss(f_id, torch.tensor([[0.0, 1.0]])).item())


def test_contrastive_loss_hand_value_and_skips_samples_without_positives():
    f_g = torch.tensor([[1.0, 0.0], [0.3, 0.7]])
    au = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([[1, 0, -1], [0, 0, 0]])
    # sims/tau = (0.5, 0, -0.5); the uncoded third AU is in neither numerator nor denominator
    expected = -(0.5 - math.log(math.exp(0.5) + 1))
    loss = contrastive_loss(f_g, au, labels, tau=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    coded = torch.tensor([[1, 0, 0], [0, 0, 0]])
    assert contrastive_loss(f_g, au, coded, tau=2.0).item() == pytest.approx(
        -(0.5 - math.log(math.exp(0.5) + 1 + math.exp(-0.5))), rel=1e-6)


def test_contrastive_loss_finite_gradient_with_uncoded_rows():
    f_g = torch.tensor([[1.0, 0.0], [0.3, 0.7]], requires_grad=True)
    au = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    loss = contrastive_loss(f_g, au, torch.tensor([[1, -1, 0], [-1, -1, -1]]))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(f_g.grad).all()
    assert f_g.grad[1].abs().sum().item() == 0.0  # a row with nothing coded contributes nothing


def test_contrastive_loss_averages_over_positives_and_has_grad_without_positives():
    f_g = torch.tensor([[1.0, 0.0]], requires_grad=True)
    au = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sims = torch.tensor([1.0, 0.0])
    log_p = sims - torch.logsumexp(sims, 0)
    assert contrastive_loss(f_g, au, torch.tensor([[1, 1]]), tau=1.0).item() == pytest.approx(-log_p.mean().item(), rel=1e-6)
    zero = contrastive_loss(f_g, au, torch.tensor([[0, 0]]))
    zero.backward()
    assert zero.item() == 0.0 and f_g.grad is not None
