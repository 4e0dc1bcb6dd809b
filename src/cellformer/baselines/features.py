"""Expression features for the baselines: log1p-normalized values of highly variable genes.

Every step works on arrays and keeps its fitted state as plain arrays (saved with safetensors):

1. ``log_normalize``: each cell scaled to ``TARGET_SUM`` counts over the model's genes, then ``log1p``
   (the CellTypist / scanpy convention).
2. ``select_hvg``: highly variable genes on the *training* cells only (Seurat flavour: dispersion
   z-scored within mean bins).
3. ``Standardizer``: per-feature mean / standard deviation from the training cells, values clipped to
   ``±MAX_VALUE`` (as ``scanpy.pp.scale(max_value=10)``).
4. ``fit_pca`` / ``project``: principal components of the standardized training features.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4
MAX_VALUE = 10.0


def log_normalize(X: sp.spmatrix | np.ndarray, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """``log1p(x / cell total * target_sum)`` per cell; cells with no counts stay zero."""
    X = sp.csr_matrix(X, dtype=np.float64, copy=True)
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    X.data *= np.repeat(scale, np.diff(X.indptr))
    np.log1p(X.data, out=X.data)
    return X


def _mean_var(X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    n = X.shape[0]
    mean = np.asarray(X.sum(axis=0)).ravel() / n
    mean_sq = np.asarray(X.multiply(X).sum(axis=0)).ravel() / n
    var = np.maximum(mean_sq - mean**2, 0.0) * n / max(n - 1, 1)
    return mean, var


def select_hvg(X_log: sp.csr_matrix, n_top: int, n_bins: int = 20) -> np.ndarray:
    """Indices (ascending) of the ``n_top`` most variable genes of log-normalized ``X_log``.

    Seurat flavour, as ``scanpy.pp.highly_variable_genes(flavor="seurat")``: on ``expm1`` of the
    values, log dispersion ``log(var / mean)`` is z-scored within ``n_bins`` bins of ``log1p(mean)``;
    ties are broken by the lower gene index. Genes never expressed are never selected.
    """
    X = sp.csr_matrix(X_log, copy=True)
    np.expm1(X.data, out=X.data)
    mean, var = _mean_var(X)
    expressed = mean > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = np.log(np.where(expressed, var / np.where(expressed, mean, 1.0), np.nan))
    dispersion[~np.isfinite(dispersion)] = np.nan
    log_mean = np.log1p(mean)
    edges = np.linspace(log_mean[expressed].min(initial=0), log_mean[expressed].max(initial=1), n_bins + 1)
    bins = np.clip(np.digitize(log_mean, edges[1:-1]), 0, n_bins - 1)
    score = np.full(len(mean), -np.inf)
    for b in np.unique(bins[expressed]):
        members = expressed & (bins == b) & np.isfinite(dispersion)
        values = dispersion[members]
        if values.size == 0:
            continue
        sd = values.std(ddof=1) if values.size > 1 else 0.0
        # a bin with one gene (or no spread) scores as average, as scanpy sets it to 1 -> near the top
        score[members] = (values - values.mean()) / sd if sd > 0 else 0.0
    candidates = np.flatnonzero(np.isfinite(score))
    order = candidates[np.lexsort((candidates, -score[candidates]))]
    return np.sort(order[:n_top]).astype(np.int64)


@dataclasses.dataclass
class Standardizer:
    """Per-feature centring and scaling fitted on the training cells, clipped to ``±max_value``."""

    mean: np.ndarray
    std: np.ndarray
    max_value: float = MAX_VALUE

    @classmethod
    def fit(cls, X: sp.csr_matrix | np.ndarray, max_value: float = MAX_VALUE) -> Standardizer:
        X = sp.csr_matrix(X, dtype=np.float64)
        mean, var = _mean_var(X)
        std = np.sqrt(var)
        std[std == 0] = 1.0
        return cls(mean.astype(np.float32), std.astype(np.float32), max_value)

    def transform(self, X: sp.csr_matrix | np.ndarray) -> np.ndarray:
        dense = X.toarray() if sp.issparse(X) else np.asarray(X)
        out = (dense.astype(np.float32) - self.mean) / self.std
        return np.clip(out, -self.max_value, self.max_value, out=out)


def fit_pca(Z: np.ndarray, n_components: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(components (k, d), mean (d,))`` of the rows of ``Z`` (exact SVD when small, else randomized)."""
    from sklearn.decomposition import PCA

    k = int(min(n_components, Z.shape[0] - 1, Z.shape[1]))
    pca = PCA(n_components=k, random_state=seed, svd_solver="auto").fit(Z)
    return pca.components_.astype(np.float32), pca.mean_.astype(np.float32)


def project(Z: np.ndarray, components: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Coordinates of ``Z``'s rows on the principal components, ``(n, k)`` float32."""
    return ((Z - mean) @ components.T).astype(np.float32)
