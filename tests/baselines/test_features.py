"""Baseline features and models on arrays: normalization, HVGs (against scanpy), save-free prediction."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cellformer.baselines import models
from cellformer.calibration.temperature import fit_temperature, softmax
from cellformer.calibration.unknown import DEFAULT_METHOD, UnknownDetector, method_for
from cellformer.tokenize import features as feat


def _counts(n_cells=300, n_genes=400, seed=0):
    rng = np.random.default_rng(seed)
    rates = rng.gamma(0.3, 2.0, size=(1, n_genes)) * rng.uniform(0.5, 2, size=(n_cells, 1))
    return sp.csr_matrix(rng.poisson(rates).astype(np.float32))


def test_log_normalize_matches_scanpy():
    import anndata as ad
    import scanpy as sc

    X = _counts()
    adata = ad.AnnData(X.copy())
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    np.testing.assert_allclose(feat.log_normalize(X).toarray(), adata.X.toarray(), rtol=1e-5, atol=1e-6)


def _scanpy_seurat_hvgs(X_log: sp.csr_matrix, n_top: int) -> np.ndarray:
    import anndata as ad
    import scanpy as sc

    table = sc.pp.highly_variable_genes(ad.AnnData(X_log), flavor="seurat", n_top_genes=n_top, inplace=False)
    return np.flatnonzero(table["highly_variable"].to_numpy())


def test_hvgs_are_scanpys_seurat_flavor():
    X_log = feat.log_normalize(_counts(seed=1))
    np.testing.assert_array_equal(feat.training_hvg(X_log, 100), _scanpy_seurat_hvgs(X_log, 100))


def test_hvgs_are_scanpys_seurat_flavor_on_real_log_data(pbmc68k_path):
    import anndata as ad

    X_log = sp.csr_matrix(ad.read_h5ad(pbmc68k_path).X, dtype=np.float64)  # log1p-normalized, 765 genes
    np.testing.assert_array_equal(feat.training_hvg(X_log, 300), _scanpy_seurat_hvgs(X_log, 300))


def test_never_expressed_genes_are_never_features():
    X = _counts(seed=3).tolil()
    X[:, [7, 50]] = 0
    X_log = feat.log_normalize(X.tocsr())
    expressed = np.flatnonzero(X_log.getnnz(axis=0))
    assert 7 not in expressed and 50 not in expressed
    assert not {7, 50} & set(feat.training_hvg(X_log, len(expressed) - 1).tolist())
    np.testing.assert_array_equal(feat.training_hvg(X_log, 398), expressed)  # more than are expressed


def test_standardizer_clips_and_centres():
    X = feat.log_normalize(_counts(seed=2))
    scaler = feat.Standardizer.fit(X)
    Z = scaler.transform(X)
    assert np.abs(Z).max() <= feat.MAX_VALUE
    unclipped = np.abs(Z).max(axis=0) < feat.MAX_VALUE
    np.testing.assert_allclose(Z[:, unclipped].mean(axis=0), 0, atol=1e-4)


def test_logreg_forward_matches_sklearn_predict_proba():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(200, 10)).astype(np.float32)
    y = (Z[:, 0] > 0).astype(int) + (Z[:, 1] > 0.5).astype(int)
    arrays, info = models.fit_logreg(Z, y, 3)
    logits, _ = models.METHODS["logreg"].forward(arrays, info, Z, Z[:, :2], 3)
    expected = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(Z, y).predict_proba(Z)
    np.testing.assert_allclose(softmax(logits), expected, atol=1e-5)


def test_knn_chooses_k_on_validation_and_votes():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [5, 5], [0, 5]], dtype=np.float32)
    y = rng.integers(0, 3, 300)
    P = centres[y] + rng.normal(scale=0.5, size=(300, 2)).astype(np.float32)
    arrays, info = models.fit_knn(P[:200], y[:200], P[200:], y[200:], 3)
    assert info["k"] in models.KNN_CANDIDATES
    logits, emb = models.METHODS["knn"].forward(arrays, info, P[200:], P[200:], 3)
    assert np.mean(logits.argmax(1) == y[200:]) > 0.95 and emb is not None


def test_temperature_and_unknown_detector_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    noisy = np.where(rng.random(500) < 0.2, rng.integers(0, 3, 500), y)
    logits = np.eye(3)[noisy] * 8 + rng.normal(size=(500, 3))  # over-confident: 8 logits, ~13% wrong
    assert fit_temperature(logits, y).temperature > 2.0
    assert fit_temperature(np.eye(3)[y] * 0.5, y).temperature < 0.5  # under-confident and always right
    emb = np.eye(3)[y] + rng.normal(scale=0.1, size=(500, 3))
    detector = UnknownDetector.fit((logits[:300], emb[:300], y[:300]), (logits[300:], emb[300:], y[300:]), 3)
    assert detector.method == method_for(DEFAULT_METHOD, None)  # no members' heads given
    assert abs(np.mean(detector.flag(logits[300:], emb[300:])) - detector.fpr_target) <= 0.03
    far = -np.ones((5, 3))  # opposite every class direction
    assert detector.flag(logits[:5], far).all()
    detector.save(tmp_path)
    again = UnknownDetector.load(tmp_path)
    np.testing.assert_array_equal(again.flag(logits, emb), detector.flag(logits, emb))
    assert again.temperature == detector.temperature and again.threshold == detector.threshold
