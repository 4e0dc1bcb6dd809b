"""A file's kept cells, aligned to the vocabulary, streamed as CSR chunks.

:class:`FileView` is what every later stage sees of an input file: which rows survived QC, how its
columns map onto the vocabulary genes and how stored values become count-like values (``expm1`` for
log1p input). Iterating never loads more than one block of ``chunk_size`` file rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from cellformer.data.read import H5adReader


def column_map(file_genes: np.ndarray, vocab_genes: list[str]) -> np.ndarray:
    """For each file column, its vocabulary index or -1 when the gene is not in the vocabulary."""
    index = {gene: i for i, gene in enumerate(vocab_genes)}
    return np.array([index.get(g, -1) for g in file_genes], dtype=np.int64)


def align_columns(X: sp.csr_matrix, col_map: np.ndarray, n_genes: int) -> sp.csr_matrix:
    """Re-index the columns of ``X`` onto the vocabulary (dropping unmapped genes and explicit zeros)."""
    X = X.tocsr()
    new_cols = col_map[X.indices]
    keep = (new_cols >= 0) & (X.data != 0)
    indptr = np.r_[0, np.cumsum(keep)][X.indptr]
    out = sp.csr_matrix((X.data[keep], new_cols[keep].astype(np.int32), indptr), shape=(X.shape[0], n_genes))
    mapped = col_map[col_map >= 0]
    if np.any(mapped[1:] < mapped[:-1]):  # the vocabulary orders genes differently from this file
        out.has_sorted_indices = False
        out.sort_indices()
    return out


def apply_transform(X: sp.csr_matrix, transform: str) -> sp.csr_matrix:
    """``"expm1"`` undoes log1p on the stored values; ``"none"`` leaves them as they are."""
    if transform == "expm1":
        X = X.copy()
        X.data = np.expm1(X.data.astype(np.float64)).astype(np.float32)
    elif transform != "none":
        raise ValueError(f"unknown value transform {transform!r}")
    return X


def read_selected(reader: H5adReader, rows: np.ndarray) -> sp.csr_matrix:
    """Rows ``rows`` (sorted, close together) of ``reader``'s matrix, read as one contiguous block."""
    if len(rows) == 0:
        return sp.csr_matrix((0, reader.n_vars), dtype=reader.dtype)
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    return reader.read_rows(lo, hi)[rows - lo]


@dataclasses.dataclass
class FileView:
    """Kept cells of one input file, aligned to ``n_genes`` vocabulary columns."""

    reader: H5adReader
    source: str  # file name written to cells.csv.gz
    rows: np.ndarray  # int64, sorted file rows that passed QC
    col_map: np.ndarray  # file column -> vocabulary index or -1
    n_genes: int
    transform: str  # "none" | "expm1"
    chunk_size: int

    def iter_chunks(self, rows: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
        """``(file rows, aligned CSR)`` for ``rows`` (default: all kept rows), in file order."""
        rows = self.rows if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        block = np.asarray(rows // self.chunk_size)
        bounds = np.flatnonzero(np.r_[True, block[1:] != block[:-1], True])
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            chunk_rows = rows[lo:hi]
            X = apply_transform(read_selected(self.reader, chunk_rows), self.transform)
            yield chunk_rows, align_columns(X, self.col_map, self.n_genes)

    def matrices(self, rows: np.ndarray | None = None) -> MatrixChunks:
        """A re-iterable of aligned CSR chunks (what ``Tokenizer.fit`` expects)."""
        return MatrixChunks(self, rows)


class MatrixChunks:
    """Re-iterable stream of aligned CSR chunks over some rows of a :class:`FileView`."""

    def __init__(self, view: FileView, rows: np.ndarray | None = None) -> None:
        self.view = view
        self.rows = rows

    def __iter__(self) -> Iterator[sp.csr_matrix]:
        for _, X in self.view.iter_chunks(self.rows):
            yield X
