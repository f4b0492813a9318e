"""Identity diagnostics against definitions: silhouette vs scikit-learn's, the probe on known data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from clile_core.diagnostics import identity_probe, ile_silhouettes, silhouette


def test_silhouette_matches_definition():
    x = np.array([[0.0], [1.0], [5.0], [7.0]])
    labels = np.array([0, 0, 1, 1])
    # point 0: a=1, b=mean(5,7)=6 -> 5/6; point 1: a=1, b=5 -> 4/5; point 2: a=2, b=4.5 -> 2.5/4.5; point 3: a=2, b=6.5 -> 4.5/6.5
    expected = np.mean([5 / 6, 4 / 5, 2.5 / 4.5, 4.5 / 6.5])
    assert silhouette(x, labels) == pytest.approx(expected)


def test_silhouette_matches_scikit_learn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    labels = np.repeat(np.arange(5), 6)
    x[:, 0] += labels * 1.5  # some structure, so the value is neither 0 nor 1
    assert silhouette(x, labels) == pytest.approx(silhouette_score(x, labels), abs=1e-9)


def test_ile_silhouettes_see_subject_clusters_and_ignore_norms():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 1, 32))
    clustered = centres + 0.05 * rng.normal(size=(6, 5, 32))  # each subject's 5 AUs near its centre
    scales = rng.uniform(0.1, 10.0, size=(6, 5, 1))
    tight = ile_silhouettes(clustered * scales)  # computed on directions: per-row scale changes nothing
    assert tight == pytest.approx(ile_silhouettes(clustered))
    assert tight["ile_silhouette_subject"] > 0.9 and tight["ile_silhouette_au"] < 0
    random = ile_silhouettes(rng.normal(size=(6, 5, 32)))
    assert abs(random["ile_silhouette_subject"]) < 0.1


def test_identity_probe_reads_identity_when_it_is_there_and_reports_chance():
    rng = np.random.default_rng(2)
    subjects = np.repeat(np.array(["A", "B", "C", "D"]), 40)
    means = {s: rng.normal(scale=6.0, size=8) for s in "ABCD"}  # far apart: separable
    x = np.stack([means[s] for s in subjects]) + rng.normal(size=(160, 8))
    train = np.arange(160) % 4 != 0
    probe = identity_probe(x[train], subjects[train], x[~train], subjects[~train])
    assert probe["id_probe_acc"] == pytest.approx(100.0) and probe["id_probe_chance"] == pytest.approx(25.0)
    noise = rng.normal(size=(160, 8))  # no identity in the features: the probe falls to about chance
    blind = identity_probe(noise[train], subjects[train], noise[~train], subjects[~train])
    assert blind["id_probe_acc"] < 50.0


def test_identity_probe_is_skipped_for_a_single_training_subject():
    x = np.random.default_rng(0).normal(size=(12, 4))
    subjects = np.array(["F001"] * 12)
    assert identity_probe(x[:8], subjects[:8], x[8:], subjects[8:]) == {}
