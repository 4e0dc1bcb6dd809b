"""The one HVG selection (cellformer.tokenize.hvg): scanpy's seurat_v3 and seurat flavors, streaming.

Its users (tokenizers, baselines, ancestor mapping) are checked against scanpy in their own test files.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellformer.tokenize.hvg import highly_variable_genes, seurat_scores, seurat_v3_scores, top_genes


def _chunks(X: sp.csr_matrix, size: int) -> list[sp.csr_matrix]:
    return [X[i : i + size] for i in range(0, X.shape[0], size)]


def assert_same_hvgs(ours: np.ndarray, scores: np.ndarray, expected) -> None:
    """Our HVGs are scanpy's, except possibly among genes tied at the cut-off score."""
    theirs = np.flatnonzero(expected["highly_variable"].to_numpy())
    assert len(ours) == len(theirs)
    cutoff = np.sort(np.nan_to_num(scores, nan=-np.inf))[::-1][len(ours) - 1]
    differ = np.setxor1d(ours, theirs)
    np.testing.assert_array_equal(scores[differ], np.full(len(differ), cutoff))


@pytest.mark.parametrize("n_cells", [1500, 2100])
def test_seurat_v3_scores_and_hvgs_equal_scanpy_on_real_counts(bladder_counts, n_cells):
    import anndata as ad
    import scanpy as sc

    X = bladder_counts[:n_cells]
    ours = highly_variable_genes(_chunks(X, 400), X.shape[1], 2000, "seurat_v3")
    expected = sc.pp.highly_variable_genes(ad.AnnData(X), flavor="seurat_v3", n_top_genes=2000, inplace=False)
    scores = seurat_v3_scores(_chunks(X, 700), X.shape[1])
    np.testing.assert_allclose(scores, expected["variances_norm"].to_numpy(), rtol=1e-12)
    assert_same_hvgs(ours, scores, expected)


def test_seurat_hvgs_for_normalized_input_equal_scanpy(pbmc68k_path):
    import anndata as ad
    import scanpy as sc

    adata = ad.read_h5ad(pbmc68k_path)
    logged = sp.csr_matrix(adata.X, dtype=np.float32)
    linear = _chunks(sp.csr_matrix(np.expm1(logged.toarray())), 128)
    ours = highly_variable_genes(linear, logged.shape[1], 300, "seurat")
    expected = sc.pp.highly_variable_genes(
        ad.AnnData(logged), flavor="seurat", n_top_genes=300, inplace=False
    )
    scores = seurat_scores(linear, logged.shape[1])
    np.testing.assert_allclose(scores, expected["dispersions_norm"].to_numpy(), rtol=1e-6)
    assert_same_hvgs(ours, scores, expected)


def test_top_genes_ranks_nan_below_every_number_and_ties_by_gene_index():
    scores = np.array([np.nan, 2.0, -np.inf, np.nan, 2.0, 5.0, -np.inf])
    assert top_genes(scores, 1).tolist() == [5]
    assert top_genes(scores, 2).tolist() == [1, 5]  # the tie at 2.0 goes to the lower index
    assert top_genes(scores, 5).tolist() == [1, 2, 4, 5, 6]  # -inf before NaN
    assert top_genes(scores, 6).tolist() == [0, 1, 2, 4, 5, 6]  # NaN only when the numbers run out
    assert top_genes(scores, 9).tolist() == list(range(7))


def test_never_expressed_genes_score_nan_and_among_limits_the_choice():
    rng = np.random.default_rng(0)
    dense = rng.gamma(0.5, 2.0, (200, 60)) * (rng.random((200, 60)) < 0.4)
    dense[:, [3, 17, 40]] = 0  # never expressed
    X = sp.csr_matrix(dense)
    scores = seurat_scores([X], 60)
    assert np.isnan(scores[[3, 17, 40]]).all() and np.isfinite(np.delete(scores, [3, 17, 40])).all()
    assert not {3, 17, 40} & set(highly_variable_genes([X], 60, 57, "seurat").tolist())
    among = np.ones(60, dtype=bool)
    among[[3, 17, 40, 5]] = False
    chosen = highly_variable_genes([X], 60, 20, "seurat", among=among)
    allowed = np.flatnonzero(among)
    np.testing.assert_array_equal(chosen, allowed[top_genes(scores[allowed], 20)])
    np.testing.assert_array_equal(highly_variable_genes([X], 60, 56, "seurat", among=among), allowed)
    np.testing.assert_array_equal(highly_variable_genes([X], 60, 60, "seurat"), np.arange(60))
    with pytest.raises(ValueError, match="unknown HVG flavor"):
        highly_variable_genes([X], 60, 20, "cell_ranger")
