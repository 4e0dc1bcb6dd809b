"""Uncertainty of the headline metrics: bootstrap confidence intervals and paired tests.

Cells are resampled with replacement (seeded, so results are reproducible), in two ways. A resample is
drawn as counts of the distinct (true label, predictions) combinations, one multinomial draw, which is
exactly the distribution of drawing the cells one by one and costs the same for 10^3 or 10^6 cells:

- **Accuracy**: plain resampling of the cells, so the interval includes the variation due to how many
  cells of each type the test split happens to hold.
- **Macro-F1**: resampling *within each true label* (a stratified bootstrap): every resample holds
  exactly as many cells of each label as the test split. A plain resample misses a rare label often (a
  1-cell class a third of the time) and then drops it from its macro average, which pushes the
  bootstrap distribution of macro-F1 away from the point estimate. Each resample's macro-F1 averages
  over the same labels as the point estimate (scikit-learn's set: labels in the full ``y_true`` or in
  the run's predictions on all cells). The interval is therefore conditional on the test split's
  cell-type counts (the usual choice for per-class metrics).

The same resampled cells are used for both runs of a paired comparison, which is what makes it paired:
the variation due to which cells happen to be in the test split cancels out of the difference.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy.stats import binomtest

from cellformer.evaluation.metrics import accuracy, macro_f1, per_class_scores

N_BOOTSTRAP = 1000
SEED = 0
METHOD = "percentile bootstrap over cells (macro-F1: resampled within each true label)"
_MAX_COUNTS = 4_000_000  # resampled category counts held in memory at once


def _categories(y_true: np.ndarray, preds: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``(true label, prediction of each run)`` tuples of the cells, ``(K, 1 + runs)``,
    and how many cells each holds ``(K,)``."""
    joint = np.stack([y_true, *preds], axis=1)  # (n_cells, 1 + runs)
    categories, counts = np.unique(joint, axis=0, return_counts=True)
    return categories, counts


def _resampled_counts(
    strata: np.ndarray, counts: np.ndarray, n_boot: int, seed: int, *, stratified: bool = True
) -> Iterator[np.ndarray]:
    """Blocks ``(block, K)`` of how many times each category is drawn in each bootstrap resample.

    Resampling ``n`` cells with replacement draws each category with probability ``count / n``, so a
    resample's category counts are one multinomial draw: exactly the distribution of resampling the
    cells one by one, at a cost set by the number of categories, not of cells. Stratified, the cells of
    each true label (``strata``, per category) are resampled among themselves, one generator per label,
    so every resample keeps each label's cell count. Rows are drawn one resample after another, so the
    resamples do not depend on the block size.
    """
    groups = strata if stratified else np.zeros_like(strata)
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    rngs = [np.random.default_rng([seed, int(g)]) for g in np.unique(groups)]
    block = max(1, _MAX_COUNTS // max(len(counts), 1))
    done = 0
    while done < n_boot:
        size = min(block, n_boot - done)
        out = np.zeros((size, len(counts)), dtype=np.int64)
        for rows, rng in zip(members, rngs, strict=True):
            total = int(counts[rows].sum())
            out[:, rows] = rng.multinomial(total, counts[rows] / total, size=size)
        yield out
        done += size


def _batched_confusion(
    y_true: np.ndarray, y_pred: np.ndarray, drawn: np.ndarray, n_labels: int
) -> np.ndarray:
    """Confusion matrices ``(n_resamples, n_labels, n_labels)`` of resamples given as category counts
    ``drawn`` ``(n_resamples, K)``; ``y_true`` / ``y_pred`` are the categories' labels ``(K,)``."""
    import scipy.sparse as sp

    codes = y_true * n_labels + y_pred  # (K,)
    to_cell = sp.csr_matrix(
        (np.ones(len(codes)), (np.arange(len(codes)), codes)), shape=(len(codes), n_labels * n_labels)
    )
    flat = np.asarray((to_cell.T @ drawn.T).T)  # (n_resamples, n_labels**2)
    return flat.reshape(-1, n_labels, n_labels).astype(np.int64)


def present_labels(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Boolean ``(n_labels,)``: labels in ``y_true`` or ``y_pred`` (the macro average's label set)."""
    counts = np.bincount(y_true, minlength=n_labels) + np.bincount(y_pred, minlength=n_labels)
    return counts[:n_labels] > 0


def _accuracy(cms: np.ndarray) -> np.ndarray:
    """Accuracy of each confusion matrix of a stack."""
    return np.diagonal(cms, axis1=1, axis2=2).sum(axis=1) / cms.sum(axis=(1, 2))


def _macro_f1(cms: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Macro-F1 over the labels ``present`` of each confusion matrix of a stack."""
    return per_class_scores(cms)["f1"][:, present].sum(axis=1) / max(int(present.sum()), 1)


def bootstrap_scores(
    y_true: np.ndarray,
    preds: list[np.ndarray],
    n_labels: int,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = SEED,
) -> list[dict[str, np.ndarray]]:
    """Accuracy and macro-F1 of each prediction vector on the same ``n_boot`` resamples of the cells.

    Accuracy on plain resamples, macro-F1 on resamples stratified by true label (see the module
    docstring); a run's macro-F1 averages, in every resample, over the labels of its point estimate.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    preds = [np.asarray(p, dtype=np.int64) for p in preds]
    present = [present_labels(y_true, p, n_labels) for p in preds]
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in preds]
    categories, counts = _categories(y_true, preds)  # runs share the resamples: paired
    strata = categories[:, 0]
    plain = _resampled_counts(strata, counts, n_boot, seed, stratified=False)
    stratified = _resampled_counts(strata, counts, n_boot, seed, stratified=True)
    for drawn, strata_drawn in zip(plain, stratified, strict=True):
        for k in range(len(preds)):
            pred = categories[:, 1 + k]
            parts[k].append(
                {
                    "accuracy": _accuracy(_batched_confusion(strata, pred, drawn, n_labels)),
                    "macro_f1": _macro_f1(
                        _batched_confusion(strata, pred, strata_drawn, n_labels), present[k]
                    ),
                }
            )
    return [
        {key: np.concatenate([p[key] for p in part]) for key in ("accuracy", "macro_f1")} for part in parts
    ]


def _interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    alpha = (1 - level) / 2
    return [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]


def bootstrap_ci(
    y_true: np.ndarray, y_pred: np.ndarray, n_labels: int, *, n_boot: int = N_BOOTSTRAP, seed: int = SEED
) -> dict[str, Any]:
    """Percentile 95% intervals for accuracy and macro-F1, JSON-ready."""
    (scores,) = bootstrap_scores(y_true, [y_pred], n_labels, n_boot=n_boot, seed=seed)
    return {
        "accuracy": _interval(scores["accuracy"]),
        "macro_f1": _interval(scores["macro_f1"]),
        "level": 0.95,
        "n_bootstrap": n_boot,
        "seed": seed,
        "method": METHOD,
    }


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float | int]:
    """Exact McNemar test: do two models make errors on the same cells equally often?

    Uses only the discordant cells (one model right, the other wrong): under the null hypothesis each
    discordant cell is equally likely to favour either model (two-sided exact binomial test).
    """
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    p_value = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": p_value}


def paired_comparison(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    n_labels: int,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = SEED,
) -> dict[str, Any]:
    """Run A minus run B on the same cells: differences with paired-bootstrap 95% CIs, and McNemar.

    ``p_value`` of a difference is the two-sided bootstrap p-value: twice the smaller share of resamples
    on either side of zero (capped at 1).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    a, b = bootstrap_scores(y_true, [pred_a, pred_b], n_labels, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {"n_bootstrap": n_boot, "seed": seed}
    observed = {
        "accuracy": accuracy(y_true, pred_a) - accuracy(y_true, pred_b),
        "macro_f1": macro_f1(y_true, pred_a, n_labels) - macro_f1(y_true, pred_b, n_labels),
    }
    for key in ("accuracy", "macro_f1"):
        diff = a[key] - b[key]
        p = 2 * min(np.mean(diff <= 0), np.mean(diff >= 0))
        out[key] = {
            "difference": float(observed[key]),
            "ci": _interval(diff),
            "p_value": float(min(1.0, p)),
        }
    out["mcnemar"] = mcnemar_test(np.asarray(pred_a) == y_true, np.asarray(pred_b) == y_true)
    return out
