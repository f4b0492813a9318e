"""Identity diagnostics: how much of a person an embedding carries, and whether stage I's ILEs found people.

CL-ILE's claim is checkable with three numbers per unit, logged beside its F1:
- ``ile_silhouette_subject`` / ``ile_silhouette_au``: the silhouette of the L2-normalised identity-label
  embeddings grouped by subject and by AU (the paper's Fig. 3: L_ID should make subject clusters);
- ``id_probe_acc`` (with ``id_probe_chance``): a linear identity probe on the embedding the model predicts
  from, fit on training frames of training subjects and scored on their held-out ("seen") frames.
  CL-ILE's F_emb^G should carry less identity than stage 0's pooled backbone features (A0).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from clile_core.names import ID_PROBE_ACC, ID_PROBE_CHANCE, ILE_SILHOUETTE_AU, ILE_SILHOUETTE_SUBJECT


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (Euclidean) of ``x`` grouped by ``labels``: +1 tight separated groups, ~0 none, <0 mixed.

    Singleton groups score 0, as in scikit-learn; NaN with fewer than two groups.
    """
    distances = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    groups = np.unique(labels)
    if len(groups) < 2:
        return float("nan")
    scores = np.zeros(len(x))
    for i in range(len(x)):
        own = labels == labels[i]
        if own.sum() < 2:
            continue
        a = distances[i, own].sum() / (own.sum() - 1)
        b = min(distances[i, labels == g].mean() for g in groups if g != labels[i])
        scores[i] = (b - a) / max(a, b) if max(a, b) > 0 else 0.0
    return float(scores.mean())


def ile_silhouettes(ile: np.ndarray) -> dict[str, float]:
    """Silhouettes of the (subjects, AUs, D) ILEs, on unit vectors (the loss and the heads see directions)."""
    n_subjects, n_aus, dim = ile.shape
    flat = ile.reshape(n_subjects * n_aus, dim)
    flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    return {
        ILE_SILHOUETTE_SUBJECT: silhouette(flat, np.repeat(np.arange(n_subjects), n_aus)),
        ILE_SILHOUETTE_AU: silhouette(flat, np.tile(np.arange(n_aus), n_subjects)),
    }


# Fixed probe protocol, so numbers compare across units: standardised features, L2-regularised
# multinomial logistic regression (C=1, lbfgs) — a linear read-out, not a trained identity model.
PROBE_C = 1.0
PROBE_MAX_ITER = 2000


def identity_probe(train_x: np.ndarray, train_subjects: np.ndarray, test_x: np.ndarray,
                   test_subjects: np.ndarray) -> dict[str, float]:
    """``id_probe_acc``: accuracy (%) of a linear identity probe fit on ``train_x`` and scored on ``test_x``
    (other frames of the same subjects); ``id_probe_chance``: the majority subject's share of ``test_x``.
    Nothing when the training frames show a single subject: there is no identity to tell apart (a benchmark's
    one-subject fold; logistic regression would refuse it)."""
    if len(np.unique(train_subjects)) < 2:
        return {}
    scaler = StandardScaler().fit(train_x)
    probe = LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER)
    probe.fit(scaler.transform(train_x), train_subjects)
    accuracy = float((probe.predict(scaler.transform(test_x)) == test_subjects).mean())
    _, counts = np.unique(test_subjects, return_counts=True)
    return {ID_PROBE_ACC: 100.0 * accuracy, ID_PROBE_CHANCE: 100.0 * counts.max() / counts.sum()}
