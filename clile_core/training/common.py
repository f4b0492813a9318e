"""Pieces the three stages share: BCE weighting, result records, feature batching."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from clile_core.atomic import atomic_path, write_text
from clile_core.config import RunConfig, StageConfig, to_dict
from clile_core.features import FeatureStore, for_training
from clile_core.data.fold_data import FoldData
from clile_core.data.images import view_names
from clile_core.diagnostics import identity_probe
from clile_core.losses import inverse_frequency_weights, selective_learning_weights, weighted_bce
from clile_core.metrics import f1_table
from clile_core.names import BEST_VAL_F1_AVG, PREDICTIONS_FILE, RESULT_JSON
from clile_core.training.loop import EpochCallback, Evaluation, FitResult, fit

Weighter = Callable[[torch.Tensor], torch.Tensor | None]


def bce_weighter(kind: str, train_labels: np.ndarray) -> Weighter:
    """Eq. 2's w_c as configured: per-batch selective learning, fold-level inverse frequency, or none."""
    if kind == "selective":
        return selective_learning_weights
    if kind == "inverse_frequency":
        fixed = inverse_frequency_weights(torch.as_tensor(train_labels))
        return lambda labels: fixed
    return lambda labels: None


class BatchLoss:
    """Eq. 2 for a batch: labels of manifest rows on the device, weights as ``loss_weighting`` says."""

    def __init__(self, cfg: RunConfig, data: FoldData, device: torch.device):
        # on the device once, so rows drawn there (resident features) index it without a host round trip
        self.labels = torch.as_tensor(data.labels, dtype=torch.float32, device=device)
        self.weights_for = bce_weighter(cfg.loss_weighting, data.labels[data.split.train])
        self.device = device

    def labels_of(self, rows: torch.Tensor) -> torch.Tensor:
        return self.labels[rows]

    def bce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(self.device, non_blocking=True)
        return weighted_bce(logits.float(), labels, self.weights_for(labels))


@dataclass(frozen=True)
class StageRun:
    """What a stage's trainer hands the shared pieces below: its name, the run config, the fold, the
    device and the epoch callback."""

    stage: str
    cfg: RunConfig
    data: FoldData
    device: torch.device
    callback: EpochCallback | None = None


@dataclass
class StageResult:
    stage: str
    out_dir: Path
    metrics: dict[str, float]  # best val F1, test_f1_*, seen_f1_*, best_epoch
    history: list[dict[str, float]] = field(default_factory=list)

    def save(self, cfg: RunConfig) -> None:
        payload = {"stage": self.stage, "metrics": self.metrics, "history": self.history, "config": to_dict(cfg)}
        write_text(self.out_dir / RESULT_JSON, json.dumps(payload, indent=1))

    @classmethod
    def load(cls, out_dir: Path) -> "StageResult":
        payload = json.loads((Path(out_dir) / RESULT_JSON).read_text())
        return cls(payload["stage"], Path(out_dir), payload["metrics"], payload["history"])


def save_predictions(out_dir: Path, evaluations: dict[str, Evaluation], rows: dict[str, np.ndarray]) -> None:
    """``predictions.npz``: per split, probabilities, labels and manifest rows (for reports' figures)."""
    arrays = {}
    for split, evaluation in evaluations.items():
        arrays.update({f"{split}_probs": evaluation.probs, f"{split}_labels": evaluation.labels, f"{split}_rows": rows[split]})
    with atomic_path(Path(out_dir) / PREDICTIONS_FILE) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def final_metrics(fit: FitResult, evaluations: dict[str, Evaluation], au_names: list[str], threshold: float) -> dict[str, float]:
    """``test_f1_AU1 … test_f1_avg``, ``seen_f1_…`` and the selection record, in percent."""
    metrics: dict[str, float] = {"best_epoch": float(fit.best_epoch), BEST_VAL_F1_AVG: 100.0 * fit.best_val_f1}
    for split, evaluation in evaluations.items():
        per_au, _ = evaluation.f1(threshold)
        metrics.update(f1_table(per_au, au_names, prefix=f"{split}_"))
    return metrics


def feature_batches(
    features: FeatureStore, rows: np.ndarray, *, cfg: StageConfig, generator: torch.Generator, views: list[str]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled training batches of (tokens, rows), each sample drawn from a random cached view.

    The order and views are drawn on the CPU from ``generator`` (so a seed gives the same batches from
    either store), then moved once per epoch to the store's device, where tokens and rows of a resident
    store stay.
    """
    rows_t = torch.as_tensor(rows, dtype=torch.long)
    order = rows_t[torch.randperm(len(rows_t), generator=generator)].to(features.device)
    view_ids = torch.randint(len(views), (len(order),), generator=generator).to(features.device)
    for start in range(0, len(order), cfg.batch_size):
        batch_rows = order[start : start + cfg.batch_size]
        if len(batch_rows) < 2 and len(order) > 1:  # a batch of one breaks the batch statistics of Eq. 2's weights
            continue
        yield features.gather_mixed(batch_rows, view_ids[start : start + cfg.batch_size], views), batch_rows


@torch.no_grad()
def map_features(features: FeatureStore, rows: np.ndarray, *, fn: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device, batch_size: int = 512) -> np.ndarray:
    """``fn`` over the centre-view tokens of ``rows``, batched so huge test folds fit in memory; the outputs
    are read back to the host once, not per batch."""
    outputs = [fn(features.gather(rows[start : start + batch_size]).to(device)).float()
               for start in range(0, len(rows), batch_size)]
    return torch.cat(outputs).cpu().numpy()


def evaluate_features(
    features: FeatureStore, rows: np.ndarray, *, labels: np.ndarray, logits_fn: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device, batch_size: int = 512,
) -> Evaluation:
    """Probabilities on the centre view of ``rows``."""
    probs = map_features(features, rows, fn=lambda t: torch.sigmoid(logits_fn(t)), device=device, batch_size=batch_size)
    return Evaluation(probs, labels[rows])


Scores = Callable[[np.ndarray], Evaluation]


def fit_on_features(
    run: StageRun, model: torch.nn.Module, *, stage_cfg: StageConfig, features: FeatureStore,
    loss_terms: Callable[[tuple[torch.Tensor, torch.Tensor]], dict[str, torch.Tensor]],
    logits: Callable[[torch.Tensor], torch.Tensor], lr_scales: dict[str, float] | None = None,
) -> tuple[FitResult, Scores]:
    """Stages I and II: shuffled batches of cached views, validation on the centre view; returns the
    fit and the scorer the final evaluation uses.

    The training and validation rows may be made resident on the device for the fit (``for_training``);
    the final evaluation of the test and seen rows streams from ``features``, once.
    """
    cfg, data, device = run.cfg, run.data, run.device
    generator = torch.Generator().manual_seed(cfg.seed)
    views = view_names(cfg.features.random_crops)
    fit_rows = np.union1d(data.split.train, data.split.val)
    train_store = for_training(features, fit_rows, names=views, device=device, cfg=cfg.features)

    def scores_from(store: FeatureStore) -> Scores:
        return lambda rows: evaluate_features(store, rows, labels=data.labels, logits_fn=logits, device=device)

    fitted = fit(
        model, stage_cfg, stage=run.stage,
        train_batches=lambda: feature_batches(train_store, data.split.train, cfg=stage_cfg, generator=generator, views=views),
        loss_terms=loss_terms, validate=lambda: scores_from(train_store)(data.split.val), au_names=data.au_names,
        threshold=cfg.threshold, device=device, callback=run.callback, lr_scales=lr_scales,
    )
    return fitted, scores_from(features)


Embed = Callable[[np.ndarray], np.ndarray]


def identity_metrics(data: FoldData, embed: Embed) -> dict[str, float]:
    """The identity probe on the embedding the stage predicts from (``clile_core.diagnostics``); nothing
    when the fold has no held-out frames of training subjects (``data.seen_fraction`` 0)."""
    if not len(data.split.seen):
        return {}
    subjects = data.manifest["subject"].to_numpy()
    return identity_probe(embed(data.split.train), subjects[data.split.train],
                          embed(data.split.seen), subjects[data.split.seen])


def finish_stage(run: StageRun, out_dir: Path, fitted: FitResult, *, scores: Scores, embed: Embed,
                 extra: dict[str, float] | None = None) -> StageResult:
    """Evaluate the selected model on the test and seen splits (an empty split is skipped), add the
    identity diagnostics (and ``extra``), write predictions and ``result.json``."""
    cfg, data = run.cfg, run.data
    evaluations = {split: scores(getattr(data.split, split)) for split in ("test", "seen") if len(getattr(data.split, split))}
    save_predictions(out_dir, evaluations, {split: getattr(data.split, split) for split in evaluations})
    metrics = final_metrics(fitted, evaluations, data.au_names, cfg.threshold)
    metrics.update(identity_metrics(data, embed))
    metrics.update(extra or {})
    result = StageResult(run.stage, Path(out_dir), metrics, fitted.history)
    result.save(cfg)
    return result
