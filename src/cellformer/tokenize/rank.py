"""Geneformer-style rank-value tokenization.

Each cell's counts are divided by the cell's total, then each gene by its median over the
*training* cells that express it; the top-k genes by that score, in descending order (ties broken
by ascending gene id), follow a ``<CLS>`` token. Genes with zero counts never become tokens, and
genes never expressed in the training cells (no median) are skipped.

With a previous-time-point profile the cell becomes
``<CLS> + top k/2 (current) + <SEP> + top k/2 (previous)``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cellformer.tokenize import kernels
from cellformer.tokens import CLS, SEP, TokenizedCells

logger = logging.getLogger(__name__)

_FIXED_SCALE = 1e6  # without per-cell normalization values are divided by this constant (ranks unchanged)
MAX_COLLECT = 4096  # a median search collects the values of an interval holding at most this many
PASS_BYTES = 64 * 2**20  # buffers of one median pass after the first (histogram) pass


def _as_csr(X: sp.spmatrix | np.ndarray, drop_zeros: bool = True) -> sp.csr_matrix:
    """``X`` as canonical CSR (sorted genes, no duplicates), without explicit zeros unless
    ``drop_zeros`` is false (for sums, which zeros do not change); copies only when it must."""
    X = sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()
    if not X.has_canonical_format:  # duplicate entries of one gene must count once
        X = X.copy()
        X.sum_duplicates()
    if not drop_zeros:
        return X
    if X.nnz and not X.data.min() > 0 and np.count_nonzero(X.data) < X.nnz:  # min() is the fast test
        X = X.copy()
        X.eliminate_zeros()
    return X


def _totals(X: sp.csr_matrix, normalize_total: bool) -> np.ndarray:
    """What each cell's values are divided by: its total, or a fixed constant (ranks unchanged)."""
    if normalize_total:
        return kernels.rows.row_totals(X.indptr, X.data, kernels.rows.exact_below(X.data.dtype))
    return np.full(X.shape[0], _FIXED_SCALE)


def nonzero_medians(
    chunks: Iterable[sp.csr_matrix],
    n_genes: int,
    normalize_total: bool = True,
    *,
    max_collect: int = MAX_COLLECT,
    pass_bytes: int = PASS_BYTES,
) -> np.ndarray:
    """Exact per-gene median of ``x / cell total`` over the cells where the gene is nonzero.

    Equal to ``np.median`` of those values, bit for bit. Streams over ``chunks`` (re-iterable)
    two or more times, with memory independent of the number of cells: pass 1 counts each gene's
    values in 128 log-spaced bins (4 per octave; ``n_genes x 128`` int32 counts); each later pass
    either collects the values of the interval holding a middle rank, when it holds at most
    ``max_collect`` of them, or splits it into 256 sub-intervals and keeps their counts and
    extreme values (see :mod:`cellformer.tokenize.kernels.medians`), its buffers within ``pass_bytes``
    (targets beyond wait for the next pass): ~0.7 KiB per gene plus ``pass_bytes``, and a chunk.
    Two passes suffice while every gene's middle bin holds at most ``max_collect`` values (a
    bin holds roughly a tenth of a gene's values: some 30,000 expressing cells); a split pass
    narrows an interval ~256-fold and an interval of equal values resolves at once, so big data
    sets take three or four. Genes never expressed get ``NaN``.
    """
    hist = np.zeros((n_genes, kernels.medians.N_BINS0), dtype=np.int32)  # counts < 2 ** 31 cells
    for X in chunks:
        X = _as_csr(X)
        kernels.medians.median_histogram(X.indptr, X.indices, X.data, _totals(X, normalize_total), hist)
    n_targets = 2 * n_genes  # the low and high middle rank of every gene
    rank, below, count, lo, hi, slot, shift = (np.zeros(n_targets, dtype=np.int64) for _ in range(7))
    value = np.full(n_targets, kernels.medians.PENDING, dtype=np.int64)
    mode = np.zeros(n_targets, dtype=np.int8)
    gate = np.zeros((n_genes, 2), dtype=np.int64)
    kernels.medians.median_targets(hist, rank, below, count, lo, hi, value)
    del hist
    n_passes = 1
    while True:
        n_split, n_collect = kernels.medians.median_plan(
            count, lo, hi, value, mode, slot, shift, gate, max_collect, pass_bytes
        )
        if n_split == 0 and n_collect == 0:
            break
        filled = np.zeros(n_targets, dtype=np.int64)
        sub_count = np.zeros((n_split, kernels.medians.N_SUB), dtype=np.int64)
        sub_min = np.full((n_split, kernels.medians.N_SUB), np.iinfo(np.int64).max)
        sub_max = np.full((n_split, kernels.medians.N_SUB), -1, dtype=np.int64)
        kept = np.empty(n_collect, dtype=np.int64)
        for X in chunks:
            X = _as_csr(X)
            kernels.medians.median_pass(
                X.indptr, X.indices, X.data, _totals(X, normalize_total), gate,
                lo, hi, mode, slot, shift, filled, sub_count, sub_min, sub_max, kept,
            )  # fmt: skip
        kernels.medians.median_resolve(
            rank, below, count, lo, hi, value, mode, slot, sub_count, sub_min, sub_max, kept
        )
        n_passes += 1
    logger.debug("gene medians: %d passes over the training cells", n_passes)
    return kernels.medians.medians_from_targets(value)


# --------------------------------------------------------------------------- token assembly


@dataclasses.dataclass
class Block:
    """A ragged run of tokens per cell: ``counts[i]`` tokens of cell ``i``, written by
    ``fill(ids, values, starts)`` at ``ids[starts[i]:]`` (and ``values``, when not ``None``)."""

    counts: np.ndarray  # int64 (n_cells,)
    fill: Callable[[np.ndarray, np.ndarray | None, np.ndarray], None]


def assemble(n_cells: int, parts: list[tuple[int, int] | Block], with_values: bool = False) -> TokenizedCells:
    """Concatenate per cell: a ``(token id, value id)`` tuple is one token for every cell."""
    lengths = np.zeros(n_cells, dtype=np.int64)
    for part in parts:
        lengths += 1 if isinstance(part, tuple) else part.counts
    offsets = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.empty(offsets[-1], dtype=np.int32)
    values = np.empty(offsets[-1], dtype=np.int16) if with_values else None
    cursor = offsets[:-1].copy()
    for part in parts:
        if isinstance(part, tuple):
            ids[cursor] = part[0]
            if values is not None:
                values[cursor] = part[1]
            cursor += 1
        else:
            part.fill(ids, values, cursor)
            cursor += part.counts
    return TokenizedCells(ids=ids, offsets=offsets, values=values)


_NO_VALUES = np.zeros(0, dtype=np.int16)


def rank_block(
    X: sp.csr_matrix,
    medians: np.ndarray,
    k: int,
    normalize_total: bool = True,
    bins: np.ndarray | None = None,
) -> Block:
    """Top-``k`` genes per cell by ``x / total / median``, descending, ties by gene id.

    ``X`` comes from :func:`_as_csr`. With ``bins`` (int16, one per entry of ``X``) each token
    gets its entry's bin as value id.
    """
    totals = _totals(X, normalize_total)
    counts = kernels.rank_tokens.rank_counts(X.indptr, X.indices, medians, k)

    def fill(ids: np.ndarray, values: np.ndarray | None, starts: np.ndarray) -> None:
        kernels.rank_tokens.rank_fill(
            X.indptr, X.indices, X.data, totals, medians, k,
            _NO_VALUES if bins is None else bins, ids, _NO_VALUES if values is None else values, starts,
        )  # fmt: skip

    return Block(counts, fill)


class RankTokenizer:
    """Rank-value tokens (Geneformer): ``<CLS>`` then the top ``max_genes`` genes.

    Parameters
    ----------
    max_genes
        Tokens per cell after ``<CLS>`` (2048 in Geneformer). With a previous profile each block
        gets ``max_genes // 2``.
    """

    name = "rank"
    has_values = False

    def __init__(
        self, max_genes: int = 2048, medians: np.ndarray | None = None, normalize_total: bool = True
    ) -> None:
        if max_genes <= 0:
            raise ValueError(f"max_genes must be positive, got {max_genes}")
        self.max_genes = int(max_genes)
        self.medians = medians
        self.normalize_total = bool(normalize_total)

    @classmethod
    def from_config(cls, config) -> RankTokenizer:
        """From a :class:`~cellformer.config.PrepareConfig`: ``max_genes``; normalized input
        (``input_normalized``) skips the per-cell total normalization."""
        return cls(max_genes=config.max_genes, normalize_total=not config.input_normalized)

    def fit(self, chunks: Iterable[sp.csr_matrix], n_genes: int | None = None) -> None:
        """Compute gene medians from the training cells (``chunks`` must be re-iterable)."""
        if n_genes is None:
            n_genes = next(iter(chunks)).shape[1]
        self.medians = nonzero_medians(chunks, n_genes, self.normalize_total)

    def _require_fitted(self) -> np.ndarray:
        if self.medians is None:
            raise RuntimeError("RankTokenizer.transform called before fit/load")
        return self.medians

    def transform(self, X: sp.csr_matrix, previous: sp.csr_matrix | None = None) -> TokenizedCells:
        medians = self._require_fitted()
        X = _as_csr(X)
        if X.shape[1] != len(medians):
            raise ValueError(f"matrix has {X.shape[1]} genes, tokenizer was fitted on {len(medians)}")
        if previous is None:
            return assemble(
                X.shape[0], [(CLS, 0), rank_block(X, medians, self.max_genes, self.normalize_total)]
            )
        previous = _as_csr(previous)
        if previous.shape != X.shape:
            raise ValueError(f"previous profile has shape {previous.shape}, current has {X.shape}")
        half = max(self.max_genes // 2, 1)
        return assemble(
            X.shape[0],
            [
                (CLS, 0),
                rank_block(X, medians, half, self.normalize_total),
                (SEP, 0),
                rank_block(previous, medians, half, self.normalize_total),
            ],
        )

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "medians.npy", self._require_fitted().astype(np.float64))
        (directory / "tokenizer.json").write_text(
            json.dumps(
                {"name": self.name, "max_genes": self.max_genes, "normalize_total": self.normalize_total},
                indent=2,
            )
        )

    @classmethod
    def load(cls, directory: Path) -> RankTokenizer:
        directory = Path(directory)
        state = json.loads((directory / "tokenizer.json").read_text())
        return cls(
            max_genes=state["max_genes"],
            medians=np.load(directory / "medians.npy"),
            normalize_total=state.get("normalize_total", True),
        )
