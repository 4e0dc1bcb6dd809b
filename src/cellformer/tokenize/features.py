"""Expression features: log1p-normalized values of highly variable genes (the baselines' input and the
unknown-cell detector's expression space; tokens are the transformer's).

Every step works on arrays and keeps its fitted state as plain arrays (saved with safetensors):

1. ``log_normalize``: each cell scaled to ``TARGET_SUM`` counts over the model's genes, then ``log1p``
   (the CellTypist / scanpy convention).
2. ``training_hvg``: highly variable genes of the *training* cells only (scanpy's seurat flavor, by
   the one HVG selection of ``cellformer.tokenize.hvg``).
3. ``Standardizer``: per-feature mean / standard deviation from the training cells, values clipped to
   ``±MAX_VALUE`` (as ``scanpy.pp.scale(max_value=10)``).
4. ``fit_pca`` / ``project``: principal components of the standardized training features.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from cellformer.tokenize.hvg import highly_variable_genes, mean_var

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
    """Per-column mean and unbiased variance (clipped at 0) of ``X``."""
    total = np.asarray(X.sum(axis=0)).ravel()
    squares = np.asarray(X.multiply(X).sum(axis=0)).ravel()
    mean, var = mean_var(X.shape[0], total, squares)
    return mean, np.maximum(var, 0.0)


def training_hvg(X_log: sp.csr_matrix, n_top: int) -> np.ndarray:
    """Indices (ascending) of the ``n_top`` most variable genes of log-normalized training cells ``X_log``.

    The one HVG selection (:func:`cellformer.tokenize.hvg.highly_variable_genes`, scanpy's ``seurat``
    flavor) on ``expm1`` of the values, so the genes are those of
    ``scanpy.pp.highly_variable_genes(flavor="seurat", n_top_genes=n_top)`` on ``X_log``. Genes never
    expressed in ``X_log`` are never chosen (there are fewer than ``n_top`` when too few are expressed).
    """
    X = sp.csr_matrix(X_log, dtype=np.float64, copy=True)
    np.expm1(X.data, out=X.data)
    expressed = np.bincount(X.indices[X.data != 0], minlength=X.shape[1]) > 0
    return highly_variable_genes([X], X.shape[1], n_top, "seurat", among=expressed)


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
