"""Gene embeddings initialised from the training cells: principal axes of their token matrix.

A gene embedding starts random and is trained only through the cells that express the gene, so with a
few thousand cells most of ~20,000 rows barely move from noise. Instead, ``embedding_init="svd"`` starts
from the space where cell types already separate: the training cells' tokens are read back as a
cells x genes matrix (the value bin of each gene token when the tokens carry values, else a weight
falling linearly with the gene's rank in the cell, 1 for the first), genes are standardised, and the
top ``d_model`` principal axes (randomized SVD, seeded) give each gene its coordinates ``V * S``.
Rows are rescaled to the random initialisation's standard deviation, so only directions change. Genes
never seen in training cells, and components beyond the data's rank, keep their random values.

Everything here reads only the token store (no expression file) and is deterministic for a seed.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch

from cellformer.data.store import TokenStore
from cellformer.tokens import N_SPECIAL

log = logging.getLogger(__name__)

MAX_CELLS = 50_000  # cells sampled for the decomposition (atlas-scale training sets)
INIT_STD = 0.02  # the random initialisation's standard deviation (CellTransformer._init_weights)


def token_matrix(
    store: TokenStore, rows: np.ndarray, n_genes: int, value_limit: int | None, max_length: int | None = None
) -> sp.csr_matrix:
    """Cells ``rows`` x genes: each gene token's value id (``1 <= v < value_limit``) or rank weight.

    Only a cell's first ``max_length`` tokens count (what the model sees of it).
    """
    cells = store.subset(np.asarray(rows, dtype=np.int64))
    ids = cells.ids.astype(np.int64)
    lengths = np.diff(cells.offsets)
    cell_of = np.repeat(np.arange(len(lengths)), lengths)
    if max_length is not None:
        position = np.arange(len(ids)) - np.repeat(cells.offsets[:-1], lengths)
        ids = np.where(position < max_length, ids, -1)
    genes = ids - N_SPECIAL
    is_gene = (genes >= 0) & (genes < n_genes)
    if cells.values is not None and value_limit is not None:
        values = cells.values.astype(np.float64)
        is_gene &= (values >= 1) & (values < value_limit)
        weights = values
    else:
        # position of each token among its cell's gene tokens -> 1 for the first, falling to 1/n
        gene_rank = np.cumsum(is_gene) - 1
        first = np.zeros(len(lengths), np.int64)
        starts = cells.offsets[:-1]
        has = lengths > 0
        before = np.concatenate([[0], np.cumsum(is_gene)])
        first[has] = before[starts[has]]
        per_cell = np.bincount(cell_of[is_gene], minlength=len(lengths))
        position = gene_rank - first[cell_of]
        weights = 1.0 - position / np.maximum(per_cell[cell_of], 1)
    matrix = sp.csr_matrix(
        (weights[is_gene], (cell_of[is_gene], genes[is_gene])),
        shape=(len(lengths), n_genes),
        dtype=np.float64,
    )
    matrix.sum_duplicates()
    return matrix


def principal_axes(X: sp.csr_matrix, k: int, seed: int, n_iter: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` singular values and right vectors ``(k,), (k, genes)`` of standardised ``X`` (randomized SVD).

    ``X`` is centred and scaled per gene implicitly (it stays sparse); deterministic for ``seed``.
    """
    n, g = X.shape
    mean = np.asarray(X.mean(axis=0)).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2
    scale = np.where(var > 1e-12, 1.0 / np.sqrt(np.maximum(var, 1e-12)), 0.0)
    shift = mean * scale

    def z(A: np.ndarray) -> np.ndarray:  # Z @ A, Z = (X - mean) * scale
        return X @ (A * scale[:, None]) - np.outer(np.ones(n), shift @ A)

    def zt(B: np.ndarray) -> np.ndarray:  # Z.T @ B
        return (X.T @ B) * scale[:, None] - np.outer(shift, B.sum(axis=0))

    rng = np.random.default_rng(seed)
    width = min(k + 10, n, g)
    Q, _ = np.linalg.qr(z(rng.standard_normal((g, width))))
    for _ in range(n_iter):
        Q, _ = np.linalg.qr(zt(Q))
        Q, _ = np.linalg.qr(z(Q))
    _, S, Vt = np.linalg.svd(zt(Q).T, full_matrices=False)
    k = min(k, len(S))
    return S[:k], Vt[:k]


def svd_gene_embeddings(
    store: TokenStore,
    train_rows: np.ndarray,
    *,
    n_genes: int,
    d_model: int,
    value_limit: int | None,
    seed: int,
    max_length: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gene embedding rows ``(n_genes, k)`` (``k <= d_model``) and which genes were seen in training."""
    rows = np.sort(np.asarray(train_rows, dtype=np.int64))
    if len(rows) > MAX_CELLS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_CELLS, replace=False))
    X = token_matrix(store, rows, n_genes, value_limit, max_length)
    seen = np.asarray((X != 0).sum(axis=0)).ravel() > 0
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # one BLAS thread: the same bits whatever the machine's thread count
        S, Vt = principal_axes(X, d_model, seed)
    coordinates = (Vt * S[:, None]).T  # (genes, k)
    spread = coordinates[seen].std() if seen.any() else 0.0
    if spread > 0:
        coordinates = coordinates * (INIT_STD / spread)
    return coordinates.astype(np.float32), seen


def initialize_gene_embeddings(
    embeddings: list[torch.nn.Embedding],
    store: TokenStore,
    train_rows: np.ndarray,
    *,
    value_limit: int | None,
    seed: int,
    max_length: int | None = None,
) -> None:
    """Overwrite the gene rows (ids ``N_SPECIAL ..``) of each of ``embeddings`` (tables of one shape: an
    ensemble's members) with one :func:`svd_gene_embeddings`, computed once; rows of genes no training
    cell holds keep each table's own random values."""
    n_genes = embeddings[0].num_embeddings - N_SPECIAL
    d_model = embeddings[0].embedding_dim
    coordinates, seen = svd_gene_embeddings(
        store,
        train_rows,
        n_genes=n_genes,
        d_model=d_model,
        value_limit=value_limit,
        seed=seed,
        max_length=max_length,
    )
    k = coordinates.shape[1]
    genes = torch.as_tensor(np.flatnonzero(seen) + N_SPECIAL)
    with torch.no_grad():
        for embedding in embeddings:
            embedding.weight[genes, :k] = torch.as_tensor(coordinates[seen])  # (vocab, C)
    log.info(
        "gene embeddings initialised from the training cells: %d genes, %d principal axes", int(seen.sum()), k
    )
