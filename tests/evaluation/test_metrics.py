"""Metrics on arrays agree with scikit-learn on known and random inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from cellformer.evaluation import metrics as m

# 3 classes; label 3 is a label unseen in training (never predicted, always an error).
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3])
Y_PRED = np.array([0, 1, 0, 1, 1, 2, 0, 2, 1, 0, 2])


def test_known_inputs_match_sklearn():
    assert m.accuracy(Y_TRUE, Y_PRED) == pytest.approx(skm.accuracy_score(Y_TRUE, Y_PRED))
    assert m.macro_f1(Y_TRUE, Y_PRED) == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert m.weighted_f1(Y_TRUE, Y_PRED) == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, average="weighted"))
    assert m.balanced_accuracy(Y_TRUE, Y_PRED) == pytest.approx(skm.balanced_accuracy_score(Y_TRUE, Y_PRED))
    np.testing.assert_array_equal(
        m.confusion_matrix(Y_TRUE, Y_PRED, 4), skm.confusion_matrix(Y_TRUE, Y_PRED, labels=range(4))
    )
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        Y_TRUE, Y_PRED, labels=range(4), zero_division=0
    )
    scores = m.per_class_scores(m.confusion_matrix(Y_TRUE, Y_PRED, 4))
    np.testing.assert_allclose(scores["precision"], precision)
    np.testing.assert_allclose(scores["recall"], recall)
    np.testing.assert_allclose(scores["f1"], f1)
    np.testing.assert_array_equal(scores["support"], support)


def test_hand_computed_values():
    # class 0: tp 2, fp 2 (cells 6, 9), fn 1 -> precision 0.5, recall 2/3
    scores = m.per_class_scores(m.confusion_matrix(Y_TRUE, Y_PRED, 4))
    assert scores["precision"][0] == pytest.approx(0.5)
    assert scores["recall"][0] == pytest.approx(2 / 3)
    assert m.accuracy(Y_TRUE, Y_PRED) == pytest.approx(6 / 11)


def test_top2_matches_sklearn_and_counts_unseen_as_errors():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 5))
    y = rng.integers(0, 5, size=200)
    assert m.top_k_accuracy(y, scores, k=2) == pytest.approx(
        skm.top_k_accuracy_score(y, scores, k=2, labels=range(5))
    )
    y_unseen = y.copy()
    y_unseen[:20] = 5  # unseen label: never in any top-k
    top1_hits = (np.argsort(-scores, axis=1)[:, :2] == y[:, None]).any(axis=1)
    assert m.top_k_accuracy(y_unseen, scores, k=2) == pytest.approx(top1_hits[20:].sum() / 200)


def test_ece_hand_computed():
    # two bins used: confidence 0.9 (4 cells, 3 right) and 0.6 (2 cells, 2 right), 15 bins
    proba = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 2)
    y = np.array([0, 0, 0, 1, 1, 1])
    expected = 4 / 6 * abs(0.75 - 0.9) + 2 / 6 * abs(1.0 - 0.6)
    assert m.expected_calibration_error(proba, y) == pytest.approx(expected)
    assert m.expected_calibration_error(np.eye(3), np.arange(3)) == pytest.approx(0.0)


def test_classification_metrics_reports_unseen_labels():
    proba = np.eye(3)[Y_PRED]
    out = m.classification_metrics(Y_TRUE, proba, ["a", "b", "c", "new"], n_classes=3)
    assert out["n_unseen_cells"] == 2
    assert out["accuracy"] == pytest.approx(6 / 11)  # the two unseen cells are errors
    assert out["accuracy_seen_labels"] == pytest.approx(6 / 9)
    unseen = out["per_class"][3]
    assert unseen["label"] == "new" and not unseen["seen_in_training"]
    assert unseen["support"] == 2 and unseen["recall"] == 0
    assert np.asarray(out["confusion"]["matrix"]).shape == (4, 3)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 60), st.integers(0, 10_000))
def test_random_inputs_match_sklearn(n_classes: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, size=n)
    y_pred = rng.integers(0, n_classes, size=n)
    assert m.macro_f1(y_true, y_pred) == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert m.weighted_f1(y_true, y_pred) == pytest.approx(
        skm.f1_score(y_true, y_pred, average="weighted", zero_division=0)
    )
    assert m.accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes only predicted, never true
        expected = skm.balanced_accuracy_score(y_true, y_pred)
    assert m.balanced_accuracy(y_true, y_pred) == pytest.approx(expected)
