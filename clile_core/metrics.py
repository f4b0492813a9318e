"""Frame-level F1 per AU, the paper's metric."""

from __future__ import annotations

import numpy as np


def f1_per_au(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, float]:
    """F1 per AU counted over all frames (-1 labels ignored), and the unweighted mean over AUs.

    An AU with no true positive scores 0 (this also covers 0/0, which the paper's tables treat as 0).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.shape != labels.shape or probs.ndim != 2:
        raise ValueError(f"probs and labels must both be (frames, AUs); got {probs.shape} and {labels.shape}")
    coded = labels >= 0
    predicted = (probs >= threshold) & coded
    actual = (labels == 1) & coded
    tp = (predicted & actual).sum(0)
    fp = (predicted & ~actual).sum(0)
    fn = (~predicted & actual & coded).sum(0)
    denom = 2 * tp + fp + fn
    f1 = np.where(tp > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return f1, float(f1.mean())


def f1_table(f1: np.ndarray, au_names: list[str], prefix: str = "") -> dict[str, float]:
    """Flat metric dict ``{prefix}f1_AU1 … {prefix}f1_avg`` in percent, the names MLflow logs."""
    out = {f"{prefix}f1_{name}": 100.0 * float(v) for name, v in zip(au_names, f1)}
    out[f"{prefix}f1_avg"] = 100.0 * float(np.mean(f1))
    return out
