import numpy as np
import pytest

from clile_core.metrics import f1_per_au, f1_table


def brute_force_f1(probs, labels, threshold):
    scores = []
    for c in range(labels.shape[1]):
        tp = fp = fn = 0
        for n in range(labels.shape[0]):
            if labels[n, c] < 0:
                continue
            pred = probs[n, c] >= threshold
            if pred and labels[n, c] == 1:
                tp += 1
            elif pred:
                fp += 1
            elif labels[n, c] == 1:
                fn += 1
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return np.array(scores)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    probs = rng.random((200, 6))
    labels = rng.choice([1, 0, -1], size=(200, 6), p=[0.3, 0.6, 0.1])
    per_au, mean = f1_per_au(probs, labels, threshold=0.5)
    expected = brute_force_f1(probs, labels, 0.5)
    assert per_au == pytest.approx(expected)
    assert mean == pytest.approx(expected.mean())


def test_f1_known_values_and_zero_without_true_positive():
    probs = np.array([[0.9, 0.9], [0.9, 0.1], [0.1, 0.9], [0.9, 0.9]])
    labels = np.array([[1, 0], [0, 0], [1, 0], [-1, 0]])
    per_au, mean = f1_per_au(probs, labels)
    assert per_au[0] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))  # row 3 is uncoded and ignored
    assert per_au[1] == 0.0
    assert mean == pytest.approx(per_au[0] / 2)


def test_f1_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="frames, AUs"):
        f1_per_au(np.zeros((3, 2)), np.zeros((3, 3)))


def test_f1_table_names_and_percent():
    table = f1_table(np.array([0.5, 0.25]), ["AU1", "AU2"], prefix="test_")
    assert table == {"test_f1_AU1": 50.0, "test_f1_AU2": 25.0, "test_f1_avg": 37.5}
