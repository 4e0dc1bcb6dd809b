"""The unknown scores on synthetic clusters: direction, determinism, storage, the threshold's FPR."""

from __future__ import annotations

import numpy as np
import pytest

from cellformer.calibration.scores import FEATURE_SCORES, SCORES
from cellformer.calibration.unknown import UnknownDetector


def _clusters(n=600, d=8, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    centres = rng.normal(size=(n_classes, d)) * 3
    emb = centres[y] + rng.normal(size=(n, d))
    return _logits(emb, centres), emb, y, centres


def _logits(emb, centres):
    return -((emb[:, None, :] - centres[None]) ** 2).sum(-1) / 40  # not saturated: no ties at p = 1


def _fit(method, quantile=0.95):
    logits, emb, y, _ = _clusters()
    return UnknownDetector.fit(
        (logits[:400], emb[:400], y[:400]), (logits[400:], emb[400:], y[400:]), 3, quantile, method=method
    )


@pytest.mark.parametrize("method", SCORES)
def test_threshold_reproduces_its_fpr_on_validation_cells(method):
    logits, emb, y, _ = _clusters()
    for quantile in (0.95, 0.8):
        detector = _fit(method, quantile)
        assert detector.method == method and detector.fpr_target == pytest.approx(1 - quantile)
        flagged = detector.flag(logits[400:], emb[400:]).mean()
        assert abs(flagged - (1 - quantile)) <= 1 / 200 + 1e-12
        assert flagged == detector.info["val_flagged_fraction"]
        shifted = _fit(method).with_quantile(quantile)  # from the stored validation scores
        assert shifted.threshold == pytest.approx(detector.threshold)


@pytest.mark.parametrize("method", FEATURE_SCORES)
def test_distance_scores_rank_far_cells_above_known_ones(method):
    logits, emb, y, centres = _clusters()
    detector = _fit(method)
    rng = np.random.default_rng(2)  # a new type: a cluster of its own, in another direction
    far = rng.normal(size=emb.shape[1]) * 3 + rng.normal(size=(20, emb.shape[1]))
    far_logits = _logits(far, centres)
    known = detector.scores(logits[400:], emb[400:])
    new = detector.scores(far_logits, far)
    assert np.median(new) > np.quantile(known, 0.95)
    assert detector.flag(far_logits, far).mean() >= 0.9


@pytest.mark.parametrize("method", SCORES)
def test_scores_are_deterministic_and_survive_storage(method, tmp_path):
    logits, emb, _, _ = _clusters()
    first, second = _fit(method), _fit(method)
    np.testing.assert_array_equal(first.scores(logits, emb), second.scores(logits, emb))
    assert first.threshold == second.threshold
    first.save(tmp_path)
    loaded = UnknownDetector.load(tmp_path)
    assert loaded.method == method and loaded.threshold == first.threshold
    np.testing.assert_array_equal(loaded.scores(logits, emb), first.scores(logits, emb))
    np.testing.assert_array_equal(loaded.flag(logits, emb), first.flag(logits, emb))


def test_feature_scores_fall_back_to_max_probability_without_embeddings():
    logits, _, y, _ = _clusters()
    detector = UnknownDetector.fit((logits[:400], None, y[:400]), (logits[400:], None, y[400:]), 3)
    assert detector.method == "max_probability"


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        _fit("entropy")


def _counts(n=500, genes=300, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    profiles = rng.gamma(0.5, 2.0, size=(n_classes + 1, genes))  # the last one: a type never trained on
    return y, profiles, rng


def _sample(profiles, types, rng):
    import scipy.sparse as sp

    return sp.csr_matrix(rng.poisson(profiles[types] * 2).astype(np.float32))


@pytest.mark.parametrize("method", ["centroid_distance", "knn_distance", "mahalanobis", "combined"])
def test_expression_space_scores(method, tmp_path):
    y, profiles, rng = _counts()
    X = _sample(profiles, y, rng)
    new = _sample(profiles, np.full(40, 3), rng)
    logits = np.zeros((len(y), 3))
    detector = UnknownDetector.fit(
        (logits[:350], None, y[:350]),
        (logits[350:], None, y[350:]),
        3,
        space="expression",
        method=method,
        expression=(X[:350], X[350:]),
    )
    assert detector.space == "expression" and detector.needs_expression
    with pytest.raises(ValueError, match="expression coordinates"):
        detector.scores(logits[350:], None)
    val = detector.expression_features(X[350:])
    assert abs(detector.flag(logits[350:], None, val).mean() - 0.05) <= 1 / 150 + 1e-12
    far = detector.expression_features(new)
    assert detector.flag(np.zeros((40, 3)), None, far).mean() >= 0.9
    detector.save(tmp_path)
    loaded = UnknownDetector.load(tmp_path)
    np.testing.assert_array_equal(
        loaded.scores(logits[350:], None, loaded.expression_features(X[350:])),
        detector.scores(logits[350:], None, val),
    )
