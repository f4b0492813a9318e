"""The epoch loop every stage shares: SGD, plateau schedule on validation F1, best-epoch selection,
non-finite loss detection, and per-epoch metrics delivered to a callback.

On a GPU the loop never waits for it within an epoch: loss terms are summed on the device and read
(and checked for NaN/inf) once per epoch, so the host queues the next steps while the GPU runs.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np
import torch
from torch import nn

from clile_core.config import StageConfig
from clile_core.log import get_logger
from clile_core.metrics import f1_per_au, f1_table
from clile_core.names import TRAIN_LOSS, train_metric


class EpochCallback(Protocol):
    def __call__(self, stage: str, epoch: int, metrics: dict[str, float]) -> None: ...


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; the orchestrator fails the trial with this reason."""


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was requested but no CUDA GPU is visible; use --set device=cpu or auto")
    return torch.device(name)


def make_reproducible(seed: int, deterministic: bool) -> None:
    """Seed torch; with ``deterministic`` also refuse non-deterministic kernels (cuDNN autotuning, atomic adds
    on the GPU), which makes GPU runs repeatable at some cost in speed. CPU runs repeat without it."""
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic GEMMs
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def autocast(device: torch.device, bf16: bool = True) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


def add_terms(sums: dict[str, torch.Tensor], terms: dict[str, torch.Tensor]) -> None:
    """Running sums of the loss terms, kept on the device (reading them would wait for the GPU)."""
    for name, value in terms.items():
        value = value.detach().float()
        sums[name] = sums[name] + value if name in sums else value


def epoch_means(sums: dict[str, torch.Tensor], steps: int, stage: str, epoch: int) -> dict[str, float]:
    """``train_<term>`` means, read in one device-to-host copy. A NaN or inf at any step of the epoch
    leaves that term's sum non-finite, so the check names the term and the epoch (not the step)."""
    if not sums:
        return {}
    totals = torch.stack(list(sums.values())).tolist()
    for name, total in zip(sums, totals):
        if not math.isfinite(total):
            raise NonFiniteLossError(
                f"{stage}: loss term {name} became {total} at epoch {epoch} (summed over its {steps} steps; "
                "checked once per epoch)"
            )
    return {train_metric(name): total / max(steps, 1) for name, total in zip(sums, totals)}


def compile_submodules(model: nn.Module) -> None:
    """torch.compile in place; the stages call the model's parts (backbone, encoder), not the wrapper."""
    for child in model.children():
        child.compile()


@dataclass
class Evaluation:
    probs: np.ndarray
    labels: np.ndarray

    def f1(self, threshold: float) -> tuple[np.ndarray, float]:
        return f1_per_au(self.probs, self.labels, threshold)


@dataclass
class FitResult:
    best_epoch: int
    best_val_f1: float
    history: list[dict[str, float]] = field(default_factory=list)


Batch = tuple[torch.Tensor, ...]


def fit(
    model: nn.Module,
    cfg: StageConfig,
    *,
    stage: str,
    train_batches: Callable[[], Iterable[Batch]],
    loss_terms: Callable[[Batch], dict[str, torch.Tensor]],
    validate: Callable[[], Evaluation],
    au_names: list[str],
    threshold: float,
    device: torch.device,
    callback: EpochCallback | None = None,
    lr_scales: dict[str, float] | None = None,
) -> FitResult:
    """Train ``model``'s trainable parameters; afterwards it holds the weights of the epoch ``cfg.select``
    names (best validation F1, or the last), and the plateau schedule followed the matching signal.

    ``loss_terms`` returns the named terms plus their weighted sum under 'loss'; each is logged per epoch.
    ``lr_scales`` multiplies the learning rate of the named parameters (the logged ``lr`` is the base rate).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    scales = lr_scales or {}
    groups = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and n not in scales]}]
    groups += [{"params": [dict(model.named_parameters())[name]], "lr": cfg.lr * scale} for name, scale in scales.items()]
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    keep_last = cfg.select == "last"
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min" if keep_last else "max", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
    if cfg.compile:
        compile_submodules(model)
    result = FitResult(best_epoch=-1, best_val_f1=-math.inf)
    best_state = None if keep_last else copy.deepcopy(model.state_dict())  # "last" never restores one
    for epoch in range(1, cfg.epochs + 1):
        start = time.time()
        model.train()
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        for steps, batch in enumerate(train_batches(), start=1):
            with autocast(device, cfg.bf16):
                terms = loss_terms(batch)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            add_terms(sums, terms)
        metrics = epoch_means(sums, steps, stage, epoch)
        model.eval()
        per_au, val_avg = validate().f1(threshold)
        scheduler.step(metrics[TRAIN_LOSS] if keep_last else val_avg)
        metrics.update(f1_table(per_au, au_names, prefix="val_"))
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["epoch_seconds"] = time.time() - start
        result.history.append({"epoch": epoch, **metrics})
        if keep_last:
            result.best_val_f1, result.best_epoch = val_avg, epoch
        elif val_avg > result.best_val_f1:
            result.best_val_f1, result.best_epoch = val_avg, epoch
            best_state = copy.deepcopy(model.state_dict())
        get_logger(stage).info(
            f"epoch {epoch}/{cfg.epochs} loss {metrics.get(TRAIN_LOSS, float('nan')):.4f} "
            f"val F1 {100 * val_avg:.1f} (best {100 * result.best_val_f1:.1f} @ {result.best_epoch}) "
            f"{metrics['epoch_seconds']:.1f}s"
        )
        if callback is not None:
            callback(stage, epoch, metrics)
    if not keep_last:
        model.load_state_dict(best_state)
    model.eval()
    return result
