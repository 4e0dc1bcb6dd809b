"""Hypothesis strategies and plain dense, one-row-at-a-time reference tokenizers for the tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from cellformer.tokens import CLS, N_SPECIAL, SEP


@st.composite
def count_matrices(draw, max_cells: int = 25, max_genes: int = 20, min_cells: int = 1) -> np.ndarray:
    """Dense integer count matrices with ties, all-zero genes, empty and one-gene cells."""
    n_cells = draw(st.integers(min_cells, max_cells))
    n_genes = draw(st.integers(1, max_genes))
    density = draw(st.sampled_from([0.05, 0.2, 0.5, 1.0]))
    max_count = draw(st.sampled_from([1, 3, 1000]))  # 1 and 3: many ties
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dense = rng.integers(1, max_count + 1, (n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < density)
    if draw(st.booleans()):  # some all-zero genes
        dense[:, rng.random(n_genes) < 0.3] = 0
    if draw(st.booleans()):  # some cells with exactly one expressed gene
        for row in np.flatnonzero(rng.random(n_cells) < 0.3):
            dense[row] = 0
            dense[row, rng.integers(n_genes)] = rng.integers(1, max_count + 1)
    return dense.astype(np.float32)


def dense_medians(train: np.ndarray) -> np.ndarray:
    """Per gene, ``np.median`` of ``x / cell total`` over the training cells where it is nonzero."""
    train = train.astype(np.float64)
    totals = train.sum(axis=1, keepdims=True)
    normalized = np.divide(train, totals, out=np.zeros_like(train), where=totals > 0)
    medians = np.full(train.shape[1], np.nan)
    for gene in range(train.shape[1]):
        nonzero = normalized[:, gene][normalized[:, gene] > 0]
        if len(nonzero):
            medians[gene] = np.median(nonzero)
    return medians


def dense_rank_row(row: np.ndarray, medians: np.ndarray, k: int) -> list[int]:
    """Top-``k`` gene token ids of one dense row, descending score, ties by ascending gene id."""
    row = row.astype(np.float64)
    genes = np.flatnonzero((row > 0) & np.isfinite(medians))
    scores = row[genes] / row.sum() / medians[genes]
    order = sorted(range(len(genes)), key=lambda i: (-scores[i], genes[i]))
    return [int(genes[i]) + N_SPECIAL for i in order[:k]]


def dense_rank_reference(
    X: np.ndarray, medians: np.ndarray, k: int, previous: np.ndarray | None = None
) -> list[list[int]]:
    """The rank tokens of every row, computed one dense row at a time."""
    if previous is None:
        return [[CLS] + dense_rank_row(row, medians, k) for row in X]
    half = max(k // 2, 1)
    return [
        [CLS] + dense_rank_row(row, medians, half) + [SEP] + dense_rank_row(prev, medians, half)
        for row, prev in zip(X, previous, strict=True)
    ]


def as_lists(tokens, values: bool = False) -> list[list[int]]:
    array = tokens.values if values else tokens.ids
    return [array[tokens.offsets[i] : tokens.offsets[i + 1]].tolist() for i in range(len(tokens))]


def dense_bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Deterministic scGPT binning of one cell's nonzero values: middle of digitize's two sides."""
    edges = np.quantile(values, np.linspace(0, 1, n_bins - 1))
    left = np.digitize(values, edges)
    right = np.digitize(values, edges, right=True)
    return (left + right + 1) // 2


def scgpt_binning(row: np.ndarray, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """scGPT's ``binning`` (scgpt/preprocess.py), its global RNG replaced by ``rng``."""
    if row.max() == 0:
        return np.zeros_like(row, dtype=np.int64)
    non_zero_ids = row.nonzero()
    non_zero_row = row[non_zero_ids]
    bins = np.quantile(non_zero_row, np.linspace(0, 1, n_bins - 1))
    left_digits = np.digitize(non_zero_row, bins)
    right_digits = np.digitize(non_zero_row, bins, right=True)
    digits = np.ceil(rng.random(len(non_zero_row)) * (left_digits - right_digits) + right_digits)
    binned_row = np.zeros_like(row, dtype=np.int64)
    binned_row[non_zero_ids] = digits.astype(np.int64)
    return binned_row


def _log_normalized(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    total = row.sum()
    return np.log1p(row / total * 1e4) if total > 0 else row


def dense_binned_row(row: np.ndarray, hvg: np.ndarray, n_bins: int, k: int) -> tuple[list[int], list[int]]:
    """Binned tokens of one dense row: nonzero HVGs in gene order (the ``k`` highest if more)."""
    logged = _log_normalized(row)
    genes = np.sort(hvg)[row[np.sort(hvg)] > 0]
    if len(genes) == 0:
        return [], []
    bins = dense_bins(logged[genes], n_bins)
    keep = sorted(sorted(range(len(genes)), key=lambda i: (-logged[genes[i]], genes[i]))[:k])
    return [int(genes[i]) + N_SPECIAL for i in keep], [int(bins[i]) for i in keep]


def dense_hybrid_row(
    row: np.ndarray, medians: np.ndarray, n_bins: int, k: int
) -> tuple[list[int], list[int]]:
    """Rank tokens of one dense row, each with its bin among all the row's nonzero genes."""
    ids = dense_rank_row(row, medians, k)
    expressed = np.flatnonzero(row > 0)
    if len(expressed) == 0:
        return [], []
    bins = np.zeros(len(row), dtype=np.int64)
    bins[expressed] = dense_bins(_log_normalized(row)[expressed], n_bins)
    return ids, [int(bins[i - N_SPECIAL]) for i in ids]


def dense_value_reference(row_tokens, X, n_bins, k, previous=None) -> tuple[list[list[int]], list[list[int]]]:
    """Ids and values of every row from a one-row tokenizer ``row_tokens(row, k)``."""
    ids, values = [], []
    for i, row in enumerate(X):
        if previous is None:
            genes, bins = row_tokens(row, k)
            ids.append([CLS, *genes])
            values.append([n_bins, *bins])
        else:
            half = max(k // 2, 1)
            genes, bins = row_tokens(row, half)
            prev_genes, prev_bins = row_tokens(previous[i], half)
            ids.append([CLS, *genes, SEP, *prev_genes])
            values.append([n_bins, *bins, n_bins + 1, *prev_bins])
    return ids, values
