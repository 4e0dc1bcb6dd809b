"""Classification metrics on plain arrays (no files, no models).

Labels are integer ids. ``y_true`` may hold ids ``>= n_classes`` for cells whose label was never
seen in training (the prepared dataset's ``unseen`` labels): the model cannot predict them, so they
always count as errors. Averages follow scikit-learn's conventions (a label enters a macro average when
it occurs in ``y_true`` or ``y_pred``), so every number here equals the scikit-learn function named in
its docstring on the same inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ECE_BINS = 15


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Counts ``C[i, j]`` of cells with true label ``i`` predicted as ``j`` (``n_labels`` square, int64).

    Equals ``sklearn.metrics.confusion_matrix(y_true, y_pred, labels=range(n_labels))``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * n_labels + y_pred, minlength=n_labels * n_labels).reshape(n_labels, n_labels)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1, support and predicted count for every label of a confusion matrix.

    ``cm`` may be a stack ``(..., n_labels, n_labels)`` (e.g. bootstrap resamples); the scores then
    have shape ``(..., n_labels)``. A score whose denominator is zero is 0 (``zero_division=0``).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support.astype(np.int64),
        "n_predicted": predicted.astype(np.int64),
    }


def _present(cm: np.ndarray) -> np.ndarray:
    """Labels that occur as a true or a predicted label (scikit-learn's default label set)."""
    return (cm.sum(axis=1) + cm.sum(axis=0)) > 0


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of cells predicted correctly (``sklearn.metrics.accuracy_score``)."""
    y_true = np.asarray(y_true)
    return float(np.mean(y_true == np.asarray(y_pred))) if y_true.size else float("nan")


def macro_f1_from_cm(cm: np.ndarray) -> float:
    """Unweighted mean F1 over the labels present (``f1_score(average="macro")``)."""
    present = _present(cm)
    return float(per_class_scores(cm)["f1"][present].mean()) if present.any() else float("nan")


def weighted_f1_from_cm(cm: np.ndarray) -> float:
    """Support-weighted mean F1 (``f1_score(average="weighted")``)."""
    scores = per_class_scores(cm)
    total = scores["support"].sum()
    return float((scores["f1"] * scores["support"]).sum() / total) if total else float("nan")


def balanced_accuracy_from_cm(cm: np.ndarray) -> float:
    """Mean recall over the labels that occur in ``y_true`` (``balanced_accuracy_score``)."""
    scores = per_class_scores(cm)
    has_support = scores["support"] > 0
    return float(scores["recall"][has_support].mean()) if has_support.any() else float("nan")


def _n_labels(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int | None) -> int:
    top = int(max(np.max(y_true, initial=-1), np.max(y_pred, initial=-1))) + 1
    return max(top, n_labels or 0)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int | None = None) -> float:
    """``sklearn.metrics.f1_score(y_true, y_pred, average="macro")``."""
    return macro_f1_from_cm(confusion_matrix(y_true, y_pred, _n_labels(y_true, y_pred, n_labels)))


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int | None = None) -> float:
    """``sklearn.metrics.f1_score(y_true, y_pred, average="weighted")``."""
    return weighted_f1_from_cm(confusion_matrix(y_true, y_pred, _n_labels(y_true, y_pred, n_labels)))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int | None = None) -> float:
    """``sklearn.metrics.balanced_accuracy_score(y_true, y_pred)``."""
    return balanced_accuracy_from_cm(confusion_matrix(y_true, y_pred, _n_labels(y_true, y_pred, n_labels)))


def top_k_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int = 2) -> float:
    """Fraction of cells whose true label is among the ``k`` highest scores.

    Equals ``sklearn.metrics.top_k_accuracy_score(y_true, scores, k=k, labels=range(n_classes))`` when
    there are no ties; cells with an unseen label (id ``>= n_classes``) are never counted as correct.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores)
    if not y_true.size:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean((top == y_true[:, None]).any(axis=1)))


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin ``(lo, hi]``: cell count, mean confidence and accuracy.

    Empty bins have count 0 and NaN means. The first bin also holds confidence exactly 0.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        mean_acc = np.bincount(index, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "count": count.astype(np.int64), "confidence": mean_conf, "accuracy": mean_acc}


def expected_calibration_error(proba: np.ndarray, y_true: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of the top-1 prediction: ``sum_b n_b / n * |accuracy_b - confidence_b|`` over equal-width bins.

    ``proba`` is ``(n_cells, n_classes)``; cells with an unseen label count as wrong predictions.
    """
    proba = np.asarray(proba)
    y_true = np.asarray(y_true)
    if not y_true.size:
        return float("nan")
    bins = reliability_bins(proba.max(axis=1), proba.argmax(axis=1) == y_true, n_bins)
    filled = bins["count"] > 0
    gap = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float((bins["count"][filled] * gap).sum() / y_true.size)


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, label_names: list[str], n_classes: int
) -> dict[str, Any]:
    """All headline and per-label metrics for one set of predictions, JSON-ready.

    Parameters
    ----------
    y_true
        Label ids; ids ``>= n_classes`` are labels unseen in training (always errors).
    proba
        ``(n_cells, n_classes)`` class probabilities (or any scores with the same argmax).
    label_names
        Names of every label id: the ``n_classes`` training classes, then the unseen labels.
    n_classes
        Number of classes the model can predict.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(proba).argmax(axis=1)
    n_labels = len(label_names)
    cm = confusion_matrix(y_true, y_pred, n_labels)
    scores = per_class_scores(cm)
    seen = y_true < n_classes
    per_class = [
        {
            "label": label_names[i],
            "seen_in_training": i < n_classes,
            "precision": float(scores["precision"][i]),
            "recall": float(scores["recall"][i]),
            "f1": float(scores["f1"][i]),
            "support": int(scores["support"][i]),
            "n_predicted": int(scores["n_predicted"][i]),
        }
        for i in range(n_labels)
    ]
    return {
        "n_cells": int(y_true.size),
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1_from_cm(cm),
        "weighted_f1": weighted_f1_from_cm(cm),
        "balanced_accuracy": balanced_accuracy_from_cm(cm),
        "top2_accuracy": top_k_accuracy(y_true, proba, k=2),
        "ece": expected_calibration_error(proba, y_true),
        "n_unseen_cells": int((~seen).sum()),
        "accuracy_seen_labels": accuracy(y_true[seen], y_pred[seen]) if seen.any() else float("nan"),
        "per_class": per_class,
        "confusion": {
            "true_labels": list(label_names),
            "predicted_labels": list(label_names[:n_classes]),
            "matrix": cm[:, :n_classes].tolist(),
        },
    }
