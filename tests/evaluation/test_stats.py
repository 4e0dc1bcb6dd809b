"""Bootstrap intervals and paired tests: correct per resample, reproducible, and sensible."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score

from cellformer.evaluation import stats


def _predictions(n: int, n_classes: int, error_rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    pred = np.where(rng.random(n) < error_rate, rng.integers(0, n_classes, size=n), y)
    return y, pred


def _expand(categories: np.ndarray, drawn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One resample's cells (true, predicted) from its category counts."""
    return np.repeat(categories[:, 0], drawn), np.repeat(categories[:, 1], drawn)


def test_each_resample_matches_sklearn_on_the_point_estimates_labels():
    y, pred = _predictions(150, 6, 0.3, seed=0)
    y[:2], pred[:2] = 6, 7  # a rare true label, and a label only ever predicted
    labels = sorted(set(y) | set(pred))
    categories, counts = stats._categories(y, [pred])
    assert counts.sum() == len(y)
    for stratified in (False, True):
        (drawn,) = list(stats._resampled_counts(categories[:, 0], counts, 5, seed=3, stratified=stratified))
        cms = stats._batched_confusion(categories[:, 0], categories[:, 1], drawn, 8)
        accuracy = stats._accuracy(cms)
        macro_f1 = stats._macro_f1(cms, stats.present_labels(y, pred, 8))
        for b in range(5):
            yb, pb = _expand(categories, drawn[b])
            assert len(yb) == len(y)  # a resample holds as many cells as the data
            assert accuracy[b] == pytest.approx(accuracy_score(yb, pb))
            expected = f1_score(yb, pb, labels=labels, average="macro", zero_division=0)
            assert macro_f1[b] == pytest.approx(expected)


def test_resamples_are_stratified_by_true_label():
    y, _ = _predictions(200, 5, 0.0, seed=4)
    y[:1] = 5  # a 1-cell class: an unstratified resample would miss it a third of the time
    categories, counts = stats._categories(y, [y])
    (drawn,) = list(stats._resampled_counts(categories[:, 0], counts, 50, seed=0))
    label_counts = np.bincount(y, minlength=6)
    for row in drawn:
        assert np.array_equal(np.bincount(categories[:, 0], weights=row, minlength=6), label_counts)
    (plain,) = list(stats._resampled_counts(categories[:, 0], counts, 50, seed=0, stratified=False))
    assert any(
        not np.array_equal(np.bincount(categories[:, 0], weights=row, minlength=6), label_counts)
        for row in plain
    )
    constant = np.zeros_like(y)  # its accuracy varies only with the class mix: plain resampling sees it
    ci = stats.bootstrap_ci(y, constant, 6, n_boot=200)
    assert ci["accuracy"][1] - ci["accuracy"][0] > 0.05


def test_counted_resamples_have_the_distribution_of_resampling_cells():
    """Multinomial category counts are the cell-by-cell bootstrap: same mean and spread of the scores."""
    y, pred = _predictions(300, 5, 0.3, seed=5)
    y[:3] = 5  # a rare class
    n_boot = 4000
    (scores,) = stats.bootstrap_scores(y, [pred], 6, n_boot=n_boot, seed=1)
    rng = np.random.default_rng(7)  # the reference: draw cell indices one by one
    plain = rng.integers(0, len(y), size=(n_boot, len(y)))
    reference_acc = (y[plain] == pred[plain]).mean(axis=1)
    within = np.empty((n_boot, len(y)), dtype=np.int64)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        within[:, members] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
    reference_f1 = np.array(
        [
            f1_score(y[row], pred[row], labels=range(6), average="macro", zero_division=0)
            for row in within[:800]
        ]
    )
    for ours, reference in ((scores["accuracy"], reference_acc), (scores["macro_f1"], reference_f1)):
        assert abs(ours.mean() - reference.mean()) < 3 * reference.std() / np.sqrt(len(reference)) + 1e-3
        assert 0.85 < ours.std() / reference.std() < 1.15


def test_ci_contains_estimate_and_is_reproducible(monkeypatch):
    y, pred = _predictions(400, 5, 0.2, seed=1)
    ci = stats.bootstrap_ci(y, pred, 5, n_boot=300)
    assert ci["accuracy"][0] < accuracy_score(y, pred) < ci["accuracy"][1]
    assert ci["macro_f1"][0] < f1_score(y, pred, average="macro") < ci["macro_f1"][1]
    assert stats.bootstrap_ci(y, pred, 5, n_boot=300) == ci
    monkeypatch.setattr(stats, "_MAX_COUNTS", 50)  # many small blocks: same numbers
    assert stats.bootstrap_ci(y, pred, 5, n_boot=300) == ci


def test_paired_identical_runs_tie():
    y, pred = _predictions(300, 4, 0.3, seed=2)
    out = stats.paired_comparison(y, pred, pred.copy(), 4, n_boot=200)
    assert out["macro_f1"]["difference"] == 0 and out["macro_f1"]["p_value"] == 1.0
    assert out["mcnemar"] == {"only_a_correct": 0, "only_b_correct": 0, "p_value": 1.0}


def test_paired_detects_a_clearly_better_run():
    y, good = _predictions(500, 4, 0.1, seed=3)
    _, bad = _predictions(500, 4, 0.6, seed=3)
    out = stats.paired_comparison(y, good, bad, 4, n_boot=300)
    assert out["accuracy"]["difference"] == pytest.approx(accuracy_score(y, good) - accuracy_score(y, bad))
    assert out["macro_f1"]["ci"][0] > 0 and out["macro_f1"]["p_value"] < 0.01
    assert out["mcnemar"]["p_value"] < 1e-6


def test_mcnemar_exact():
    a = np.array([1, 1, 1, 1, 1, 0, 0, 1], dtype=bool)
    b = np.array([0, 0, 0, 1, 1, 1, 0, 1], dtype=bool)
    out = stats.mcnemar_test(a, b)
    assert (out["only_a_correct"], out["only_b_correct"]) == (3, 1)
    assert out["p_value"] == pytest.approx(binomtest(3, 4, 0.5).pvalue)


def test_bootstrap_is_centred_on_the_point_estimate_of_real_runs(runs):
    from cellformer.evaluation.report import load_result

    for run in runs:
        result = load_result(run.run_dir, "test")
        n_labels = len(result.metrics["data"]["classes"]) + len(result.metrics["data"]["unseen"])
        counts = np.bincount(result.y_true, minlength=n_labels)
        categories, sizes = stats._categories(result.y_true, [result.y_pred])
        for drawn in stats._resampled_counts(categories[:, 0], sizes, stats.N_BOOTSTRAP, stats.SEED):
            per_resample = np.stack([np.bincount(categories[:, 0], row, n_labels) for row in drawn])
            assert (per_resample == counts).all()  # every resample holds every class, same counts
        (scores,) = stats.bootstrap_scores(result.y_true, [result.y_pred], n_labels)
        point = result.metrics["macro_f1"]
        assert abs(np.median(scores["macro_f1"]) - point) < 0.01, run.run_dir.name
        assert 0.3 < np.mean(scores["macro_f1"] > point) < 0.7, run.run_dir.name
        ci = result.metrics["ci"]
        assert ci["method"] == stats.METHOD and ci["macro_f1"][0] < point < ci["macro_f1"][1]
