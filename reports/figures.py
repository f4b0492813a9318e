"""The paper's figures, from numbers already loaded: each function returns a matplotlib Figure; ``save``
writes it as PNG and SVG; ``unit_figures`` draws a trained unit's own figures from its folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are built by drivers and CI without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from clile_core.diagnostics import ile_silhouettes  # noqa: E402
from clile_core.names import (AU_CORRELATION_FIGURE, CURVES_FIGURE, FIGURE_FORMATS, IDENTITY_FIGURE,  # noqa: E402
                              ILE_SILHOUETTE_AU, ILE_SILHOUETTE_SUBJECT, PREDICTIONS_FILE, STAGE1_FILE, UNIT_FIGURES,
                              TRAIN_LOSS, TRAIN_PREFIX, VAL, VAL_F1_AVG, WEIGHTS, f1_metric)
from reports.tables import Summary  # noqa: E402

def save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.{ext}" for ext in FIGURE_FORMATS]
    for path in paths:
        # no bbox_inches="tight": every figure is laid out "constrained" with its legends inside the axes, and
        # the tight box would draw the figure a second time per format (a unit draws its figures in its trial)
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths


def _heading(title: str, text: str) -> str:
    return f"{title}\n{text}" if title else text


def pca_2d(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def identity_embeddings(ile: np.ndarray, subjects: list[str], au_names: list[str], title: str = "") -> Figure:
    """Fig. 3: PCA of the identity-label embeddings (subjects × AUs × D), coloured by subject and by AU.

    The paper's claim is that L_ID makes each subject's C embeddings a cluster: the subject silhouette
    should be high and the AU silhouette low.
    """
    n_subjects, n_aus, _ = ile.shape
    flat = ile.reshape(n_subjects * n_aus, -1)
    points = pca_2d(flat)
    by_subject = np.repeat(np.arange(n_subjects), n_aus)
    by_au = np.tile(np.arange(n_aus), n_subjects)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), layout="constrained")
    for ax, labels, names, what in ((axes[0], by_subject, subjects, "subject"), (axes[1], by_au, au_names, "AU")):
        cmap = plt.get_cmap("tab20", max(len(names), 1))
        for k, name in enumerate(names):
            mine = labels == k
            ax.scatter(points[mine, 0], points[mine, 1], s=22, color=cmap(k), label=str(name))
        ax.set_title(f"coloured by {what}")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        if len(names) <= 20:
            ax.legend(fontsize=7, ncol=2, loc="best", markerscale=0.8)
    scores = ile_silhouettes(ile)
    fig.suptitle(_heading(title, f"Identity-label embeddings (PCA) — subject cohesion: mean silhouette by subject "
                 f"{scores[ILE_SILHOUETTE_SUBJECT]:.2f} (by AU {scores[ILE_SILHOUETTE_AU]:.2f}; 1 = tight clusters)"))
    return fig


def correlation(binary: np.ndarray, coded: np.ndarray) -> np.ndarray:
    """Pearson (phi) correlation between AU columns over frames where both AUs are coded; NaN if constant."""
    n = binary.shape[1]
    out = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            both = coded[:, i] & coded[:, j]
            a, b = binary[both, i].astype(float), binary[both, j].astype(float)
            if both.sum() > 1 and a.std() > 0 and b.std() > 0:
                out[i, j] = float(np.corrcoef(a, b)[0, 1])
    return out


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def au_correlations(labels: np.ndarray, probs: np.ndarray, au_names: list[str], *, threshold: float = 0.5,
                    au_embeddings: np.ndarray | None = None, title: str = "") -> Figure:
    """Fig. 4: ground-truth AU co-occurrence on the test fold beside the model's (its predictions'
    co-occurrence and, when it has them, its AU embeddings' cosine similarity); one order, one scale."""
    coded = labels >= 0  # -1 = not coded
    panels = [("ground truth (test labels)", correlation(labels == 1, coded)),
              ("model predictions", correlation(probs >= threshold, coded))]
    if au_embeddings is not None:
        panels.append(("AU embeddings (cosine)", cosine_matrix(au_embeddings)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels) + 1, 4.6), squeeze=False, layout="constrained")
    ticks = np.arange(len(au_names))
    for ax, (panel, matrix) in zip(axes[0], panels):
        image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(panel)
        ax.set_xticks(ticks, au_names, rotation=90, fontsize=7)
        ax.set_yticks(ticks, au_names, fontsize=7)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="correlation / cosine similarity")
    fig.suptitle(_heading(title, "AU relations: label co-occurrence vs the model's (blank = undefined: AU constant)"))
    return fig


def training_curves(history: dict[str, list[tuple[int, float]]], title: str) -> Figure:
    """Per-epoch loss terms (left) and validation F1 (right) of one unit; ``history``: metric -> (epoch, value)."""
    fig, (losses, f1) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    terms = sorted((name for name in history if name.startswith(TRAIN_PREFIX) and history[name]),
                   key=lambda name: name != TRAIN_LOSS)  # the weighted sum first, then the terms as logged
    for term in terms:
        epochs, values = zip(*sorted(history[term]))
        losses.plot(epochs, values, marker="o", ms=3, label=term.removeprefix(TRAIN_PREFIX),
                    lw=2 if term == TRAIN_LOSS else 1)
    losses.set_title("training loss terms")
    losses.set_xlabel("epoch")
    for name, points in sorted(history.items()):
        if name.startswith(f1_metric(VAL, "AU")) and points:
            epochs, values = zip(*sorted(points))
            f1.plot(epochs, values, lw=0.8, alpha=0.35, color="grey")
    if history.get(VAL_F1_AVG):
        epochs, values = zip(*sorted(history[VAL_F1_AVG]))
        f1.plot(epochs, values, marker="o", ms=3, lw=2, color="C3", label="average (per-AU in grey)")
    f1.set_title("validation F1 (%)")
    f1.set_xlabel("epoch")
    for ax in (losses, f1):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def f1_bars(summary: Summary, au_names: list[str], paper: dict[str, list[float]], note: str = "") -> Figure:
    """Per-AU test F1 of each row of this run (mean over folds, std as error bars) beside the paper's rows."""
    columns = [*au_names, "avg"]
    series = [(f"{row} (this run)", summary.mean.loc[row, columns].to_numpy(float),
               summary.std.loc[row, columns].to_numpy(float)) for row in summary.mean.index]
    series += [(f"{name} (published)", np.asarray(values, float), None) for name, values in paper.items()]
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(columns))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(columns) * max(1, len(series) / 2)), 4.5), layout="constrained")
    for k, (label, values, errors) in enumerate(series):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, yerr=errors, label=label,
               hatch="//" if errors is None else None, alpha=0.9, capsize=2)
    ax.set_xticks(x, columns)
    ax.set_ylabel("test F1 (%)")
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("Per-AU F1: this run vs the paper" + (f"\n{note}" if note else ""), fontsize=10)
    return fig


def seen_vs_unseen(test: Summary, seen: Summary) -> Figure:
    """Average F1 on held-out frames of training subjects (seen) vs on test subjects (unseen), per row:
    the identity-bias gap CL-ILE exists to close."""
    rows = list(test.mean.index)
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) + 2), 4.2), layout="constrained")
    for offset, (label, summary) in zip((-0.2, 0.2), (("seen subjects", seen), ("unseen subjects (test)", test))):
        means = summary.mean["avg"].reindex(rows).to_numpy(float)
        ax.bar(x + offset, means, 0.4, yerr=summary.std["avg"].reindex(rows).to_numpy(float),
               label=label, capsize=3)
    gaps = seen.mean["avg"].reindex(rows).to_numpy(float) - test.mean["avg"].reindex(rows).to_numpy(float)
    for k, gap in enumerate(gaps):
        if not np.isnan(gap):
            top = np.nanmax([seen.mean["avg"].get(rows[k], np.nan), test.mean["avg"].get(rows[k], np.nan)])
            ax.annotate(f"gap {gap:+.1f}", (x[k], top), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(x, rows)
    ax.set_ylabel("average F1 (%)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Seen vs unseen subjects: the identity-bias gap (seen − unseen)")
    return fig


def _series(history: list[dict[str, float]]) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch rows (``{"epoch": e, metric: value, ...}``) as metric -> [(epoch, value)] for the curves."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in history:
        for key, value in row.items():
            if key == VAL_F1_AVG or key.startswith((TRAIN_PREFIX, f1_metric(VAL, "AU"))):
                series.setdefault(key, []).append((int(row["epoch"]), float(value)))
    return series


def unit_figures(unit_dir: Path, *, history: list[dict[str, float]], au_names: list[str], threshold: float,
                 title: str) -> list[Path]:
    """A unit's figures into ``unit_dir/figures``, from the files its stage wrote there: curves for every
    unit; Fig. 3 for a stage-I unit (``stage1.pt``); Fig. 4 for a unit with test predictions."""
    out_dir = unit_dir / UNIT_FIGURES
    paths = save(training_curves(_series(history), title), out_dir, CURVES_FIGURE)
    if (unit_dir / STAGE1_FILE).exists():
        saved = torch.load(unit_dir / STAGE1_FILE, map_location="cpu", weights_only=True)
        fig = identity_embeddings(saved["ile"].float().numpy(), [str(s) for s in saved["subjects"]], au_names, title)
        paths += save(fig, out_dir, IDENTITY_FIGURE)
    if (unit_dir / PREDICTIONS_FILE).exists():
        weights = unit_dir / WEIGHTS
        saved = torch.load(weights, map_location="cpu", weights_only=True) if weights.exists() else {}
        embeddings = saved["au_embeddings"].float().numpy() if "au_embeddings" in saved else None
        with np.load(unit_dir / PREDICTIONS_FILE) as npz:
            fig = au_correlations(npz["test_labels"], npz["test_probs"], au_names, threshold=threshold,
                                  au_embeddings=embeddings, title=title)
        paths += save(fig, out_dir, AU_CORRELATION_FIGURE)
    return paths
