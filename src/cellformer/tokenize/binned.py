"""scGPT-style binned-value tokenization, and the rank-order/binned-value hybrid.

Both tokenizers emit a value id beside every gene id (``has_values = True``):

* value ``0`` is reserved for zero expression (and is the padding value; zero genes never become
  tokens, so it only appears as padding),
* values ``1 .. n_bins - 1`` are expression bins (scGPT's convention: ``n_bins`` counts the zero bin),
* ``n_bins`` is the value of ``<CLS>`` and ``n_bins + 1`` the value of ``<SEP>``,

so a value embedding table needs ``value_vocab_size = n_bins + 2`` rows.

Expression of a cell is ``log1p(x / total * 1e4)`` (``total`` over all genes, like scGPT's
``normalize_total(target_sum=1e4)`` + ``log1p``). Its nonzero values are binned by the cell's own
quantiles: edges ``np.quantile(values, np.linspace(0, 1, n_bins - 1))`` (linear interpolation), and a
value gets ``(left + right + 1) // 2`` where ``left = np.digitize(v, edges)`` and
``right = np.digitize(v, edges, right=True)``. scGPT draws a random bin between ``right`` and
``left`` when a value sits on several equal edges (many tied values); we take the middle of that
range instead, so tied values always share one bin and no random generator is involved. A value
on exactly one edge gets ``left`` in both (scGPT's random draw picks it with probability 1).
With UMI counts many of a cell's nonzero values tie at the lowest counts (1, 2, ...): each such
group shares one middle bin here, where scGPT would spread it at random over its bins.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from cellformer.tokenize import kernels
from cellformer.tokenize.hvg import check_flavor, flavor_for, highly_variable_genes
from cellformer.tokenize.rank import Block, RankTokenizer, _as_csr, assemble, rank_block
from cellformer.tokens import CLS, SEP, TokenizedCells

if TYPE_CHECKING:
    from cellformer.config import PrepareConfig

logger = logging.getLogger(__name__)

TARGET_SUM = 1e4

# --------------------------------------------------------------------------- binning


def log_normalized_entries(
    X: sp.csr_matrix, keep_genes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nonzero entries of ``X`` as (row, gene, ``log1p(x / total * 1e4)``), float64, CSR order.

    ``total`` is the cell's sum over all genes; ``keep_genes`` (a boolean mask over genes) limits
    the entries returned, not the totals. Same arithmetic as the tokenizers' kernels.
    """
    X = _as_csr(X)
    rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
    totals = np.bincount(rows, weights=X.data, minlength=X.shape[0])
    keep = X.data != 0
    if keep_genes is not None:
        keep &= keep_genes[X.indices]
    rows, genes = rows[keep], X.indices[keep].astype(np.int64)
    fraction = X.data[keep].astype(np.float64) / totals[rows]
    return rows, genes, np.log1p(fraction * TARGET_SUM)


def quantile_bins(rows: np.ndarray, values: np.ndarray, n_cells: int, n_bins: int) -> np.ndarray:
    """Bin each entry by the quantiles of its own cell's values (see the module docstring).

    Parameters
    ----------
    rows
        Cell of each entry (``0 <= row < n_cells``); entries need not be sorted.
    values
        Positive expression values, float64.
    n_bins
        Number of bins counting the zero bin; nonzero values get ``1 .. n_bins - 1``.

    Returns
    -------
    int16 bin ids aligned with ``values``.
    """
    values = np.asarray(values, dtype=np.float64)
    by_row = None if np.all(rows[1:] >= rows[:-1]) else np.argsort(rows, kind="stable")
    if by_row is not None:  # callers pass CSR order; anything else is grouped by cell first
        rows, values = rows[by_row], values[by_row]
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_cells), out=indptr[1:])
    out = np.zeros(len(values), dtype=np.int16)
    kernels.value_bins.bins_csr(indptr, np.ascontiguousarray(values), _quantiles(n_bins), out)
    if by_row is not None:
        out[by_row] = out.copy()
    return out


def _quantiles(n_bins: int) -> np.ndarray:
    """The quantiles of a cell's values that make the bin edges."""
    return np.linspace(0, 1, n_bins - 1)


VALUE_BINS = ("cell", "gene")
# gene-wise edges come from a histogram of each gene's training values on this grid of log1p values
# (log1p(1e4) = 9.21 is the largest value a cell can hold, so the grid covers every value)
_GRID_STEP = 1 / 128
_GRID_CELLS = int(np.ceil(np.log1p(TARGET_SUM) / _GRID_STEP)) + 1


def gene_value_edges(
    chunks: Iterable[sp.csr_matrix], n_genes: int, genes: np.ndarray, n_bins: int
) -> np.ndarray:
    """Each gene's bin edges: the quantiles of its nonzero training values, ``(n_genes, n_bins - 1)``.

    Values are ``log1p(x / total * 1e4)`` as everywhere in this module, counted per gene on a grid of
    width 1/128 (one streaming pass, memory ``len(genes) x 1,181`` counts, whatever the number of cells);
    an edge is the centre of the grid cell where the gene's cumulative count reaches the quantile.
    Rows of genes outside ``genes`` (never tokens) or never expressed in a training cell are ``NaN``.
    """
    index = np.full(n_genes, -1, dtype=np.int64)
    index[genes] = np.arange(len(genes))
    counts = np.zeros(len(genes) * _GRID_CELLS, dtype=np.int64)
    for chunk in chunks:
        rows, columns, values = log_normalized_entries(chunk)
        slot = index[columns]
        keep = slot >= 0
        cell = np.minimum((values[keep] / _GRID_STEP).astype(np.int64), _GRID_CELLS - 1)
        counts += np.bincount(slot[keep] * _GRID_CELLS + cell, minlength=len(counts))
    counts = counts.reshape(len(genes), _GRID_CELLS)
    cumulative = np.cumsum(counts, axis=1)
    totals = cumulative[:, -1:]
    targets = _quantiles(n_bins)[None, :] * totals
    edges = np.full((n_genes, n_bins - 1), np.nan)
    for row in np.flatnonzero(totals[:, 0] > 0):
        cells = np.searchsorted(cumulative[row], np.maximum(targets[row], 1), side="left")
        edges[genes[row]] = (cells + 0.5) * _GRID_STEP
    return edges


def gene_bins(genes: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin each entry by its own gene's edges (:func:`gene_value_edges`), ids ``1 .. n_bins - 1``.

    Tied edges give the middle of their range, as :func:`quantile_bins`; a value below the gene's
    lowest edge gets bin 1, genes without edges get bin 1 (they never become tokens).
    """
    n_edges = edges.shape[1]
    offset = 2 * _GRID_CELLS * _GRID_STEP  # larger than any value or edge: genes' edges never interleave
    flat = (np.nan_to_num(edges, nan=0.0) + np.arange(len(edges))[:, None] * offset).ravel()
    shifted = values + genes * offset
    base = genes.astype(np.int64) * n_edges
    left = np.searchsorted(flat, shifted, side="right") - base
    right = np.searchsorted(flat, shifted, side="left") - base
    bins = np.clip((left + right + 1) // 2, 1, n_edges).astype(np.int16)
    bins[np.isnan(edges[genes, 0])] = 1
    return bins


# --------------------------------------------------------------------------- token assembly


class _ValueTokens:
    """Shared value-id layout and ``<CLS>``/``<SEP>`` handling of the two binned tokenizers."""

    has_values = True
    n_bins: int
    max_genes: int

    @property
    def cls_value(self) -> int:
        return self.n_bins

    @property
    def sep_value(self) -> int:
        return self.n_bins + 1

    @property
    def value_vocab_size(self) -> int:
        """Rows a value embedding needs: zero/pad, ``n_bins - 1`` bins, ``<CLS>``, ``<SEP>``."""
        return self.n_bins + 2

    def _value_layout(self) -> dict[str, int]:
        """The value ids a saved tokenizer.json records (read by the model set-up)."""
        return {
            "value_vocab_size": self.value_vocab_size,
            "cls_value": self.cls_value,
            "sep_value": self.sep_value,
        }

    block_drops_zeros = False  # whether _block takes explicit zeros (and drops them itself)

    def _block(self, X: sp.csr_matrix, k: int) -> Block:
        raise NotImplementedError

    def _tokens(self, X: sp.csr_matrix, previous: sp.csr_matrix | None) -> TokenizedCells:
        X = _as_csr(X, drop_zeros=not self.block_drops_zeros)
        n_cells = X.shape[0]
        if previous is None:
            return assemble(
                n_cells, [(CLS, self.cls_value), self._block(X, self.max_genes)], with_values=True
            )
        previous = _as_csr(previous, drop_zeros=not self.block_drops_zeros)
        if previous.shape != X.shape:
            raise ValueError(f"previous profile has shape {previous.shape}, current has {X.shape}")
        half = max(self.max_genes // 2, 1)
        return assemble(
            n_cells,
            [(CLS, self.cls_value), self._block(X, half), (SEP, self.sep_value), self._block(previous, half)],
            with_values=True,
        )


def _count_block(X: sp.csr_matrix, gene_mask: np.ndarray, n_bins: int, k: int) -> Block | None:
    """The binned block of integer counts, from each cell's distinct counts (no per-value sort).

    Same tokens as the general path; ``None`` where ``X`` holds other values than positive counts
    (explicit zeros included), or in the (theoretical) case where two distinct counts of a cell do
    not give strictly increasing values.
    """
    are_counts, totals, indptr, genes, counts = kernels.count_bins.count_entries(
        X.indptr, X.indices, X.data, gene_mask, kernels.rows.exact_below(X.data.dtype)
    )
    if not are_counts:
        return None
    distinct = kernels.count_bins.distinct_counts(indptr, counts, totals, TARGET_SUM)
    values = distinct[3]
    np.log1p(values, out=values)  # numpy's log1p, as log_normalized_entries
    if not kernels.count_bins.increasing_rows(distinct[0], values):
        return None
    quantiles = _quantiles(n_bins)

    def fill(ids: np.ndarray, bins: np.ndarray | None, starts: np.ndarray) -> None:
        kernels.count_bins.count_fill((indptr, genes, counts), distinct, quantiles, k, ids, bins, starts)

    return Block(np.minimum(np.diff(indptr), k), fill)


def _check_bins(n_bins: int) -> None:
    if not 2 <= n_bins <= 32000:
        raise ValueError(f"n_bins must be in [2, 32000], got {n_bins}")


class BinnedTokenizer(_ValueTokens):
    """Binned-value tokens (scGPT): ``<CLS>`` then the cell's nonzero highly variable genes.

    Tokens are the cell's nonzero HVGs in ascending gene-id order (scGPT's model has no positional
    embedding, so the order carries no information; gene-id order makes it deterministic). A cell with
    more than ``max_genes`` nonzero HVGs keeps the ``max_genes`` highest (ties by gene id), still
    in gene-id order; the bins are computed over all of the cell's nonzero HVGs either way.

    Parameters
    ----------
    n_hvg
        Highly variable genes chosen on the training cells.
    n_bins
        Bins counting the zero bin (scGPT: 51), see the module docstring for the value ids.
    max_genes
        Gene tokens per cell after ``<CLS>``; with a previous profile each block gets half.
    flavor
        ``"seurat_v3"`` (counts; default) or ``"seurat"`` (for ``--input-normalized`` data, where
        counts are not available; dispersion of the de-logged values). Values are binned as
        ``log1p(x / total * 1e4)`` either way (scGPT normalizes every cell to 1e4).
    hvg
        Fitted HVG column indices (sorted), or ``None`` before ``fit``.
    """

    name = "binned"
    block_drops_zeros = True

    def __init__(
        self,
        n_hvg: int = 2000,
        n_bins: int = 51,
        max_genes: int = 2048,
        flavor: str = "seurat_v3",
        hvg: np.ndarray | None = None,
        n_genes: int | None = None,
    ) -> None:
        if n_hvg <= 0 or max_genes <= 0:
            raise ValueError(f"n_hvg and max_genes must be positive, got {n_hvg} and {max_genes}")
        _check_bins(n_bins)
        check_flavor(flavor)
        self.n_hvg, self.n_bins, self.max_genes, self.flavor = int(n_hvg), int(n_bins), int(max_genes), flavor
        self.hvg = None if hvg is None else np.asarray(hvg, dtype=np.int64)
        self.n_genes = n_genes

    @classmethod
    def from_config(cls, config: PrepareConfig) -> BinnedTokenizer:
        """HVGs and bins from ``--n-hvg`` / ``--n-bins``; ``seurat`` HVGs for ``--input-normalized``."""
        return cls(
            n_hvg=config.n_hvg,
            n_bins=config.n_bins,
            max_genes=config.max_genes,
            flavor=flavor_for(config),
        )

    def fit(self, chunks: Iterable[sp.csr_matrix], n_genes: int | None = None) -> None:
        """Choose the HVGs on the training cells (``chunks`` must be re-iterable)."""
        if n_genes is None:
            n_genes = next(iter(chunks)).shape[1]
        self.n_genes = int(n_genes)
        self.hvg = highly_variable_genes(chunks, n_genes, self.n_hvg, self.flavor)
        logger.info("binned tokenizer: %d HVGs (%s) of %d genes", len(self.hvg), self.flavor, n_genes)

    def _require_fitted(self) -> np.ndarray:
        if self.hvg is None:
            raise RuntimeError("BinnedTokenizer.transform called before fit/load")
        return self.hvg

    def _block(self, X: sp.csr_matrix, k: int) -> Block:
        hvg_mask = np.zeros(X.shape[1], dtype=np.int32)  # 0/1 (faster than bool in the kernel)
        hvg_mask[self._require_fitted()] = 1
        block = _count_block(X, hvg_mask, self.n_bins, k)
        if block is not None:
            return block
        X = _as_csr(X)  # the general path needs explicit zeros dropped
        totals = kernels.rows.row_totals(X.indptr, X.data, kernels.rows.exact_below(X.data.dtype))
        indptr, genes, values = kernels.value_bins.log_input(
            X.indptr, X.indices, X.data, hvg_mask, totals, TARGET_SUM
        )
        np.log1p(values, out=values)  # numpy's log1p, as log_normalized_entries
        quantiles = _quantiles(self.n_bins)

        def fill(ids: np.ndarray, bins: np.ndarray | None, starts: np.ndarray) -> None:
            kernels.value_bins.binned_fill(indptr, genes, values, quantiles, k, ids, bins, starts)

        return Block(np.minimum(np.diff(indptr), k), fill)

    def transform(self, X: sp.csr_matrix, previous: sp.csr_matrix | None = None) -> TokenizedCells:
        hvg = self._require_fitted()
        if (self.n_genes is not None and X.shape[1] != self.n_genes) or hvg.max(initial=-1) >= X.shape[1]:
            raise ValueError(f"matrix has {X.shape[1]} genes, tokenizer was fitted on {self.n_genes}")
        return self._tokens(X, previous)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "hvg.npy", self._require_fitted())
        state = {
            "name": self.name,
            "n_hvg": self.n_hvg,
            "n_bins": self.n_bins,
            "max_genes": self.max_genes,
            "flavor": self.flavor,
            "n_genes": self.n_genes,
            **self._value_layout(),
        }
        (directory / "tokenizer.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: Path) -> BinnedTokenizer:
        directory = Path(directory)
        state = json.loads((directory / "tokenizer.json").read_text())
        return cls(
            n_hvg=state["n_hvg"],
            n_bins=state["n_bins"],
            max_genes=state["max_genes"],
            flavor=state["flavor"],
            hvg=np.load(directory / "hvg.npy", allow_pickle=False),
            n_genes=state["n_genes"],
        )


class HybridTokenizer(_ValueTokens):
    """Rank order with binned values: RankTokenizer's genes, in its order, each with a value id.

    The genes and their order are :class:`RankTokenizer`'s (top ``max_genes`` by
    ``x / total / training median``) among the ``n_hvg`` highly variable genes of the training cells
    (every gene when ``n_hvg`` is ``None`` or the file has fewer); each gene's value id is its bin among
    *all* of the cell's nonzero genes (``log1p(x / total * 1e4)``, quantile bins as in
    :class:`BinnedTokenizer`), so the model sees the quantities scGPT keeps on the genes Geneformer
    would choose. Restricting the ranking to HVGs keeps genes detected by one or two counts in a few
    cells (which the division by a small median lifts into the top ranks of a whole transcriptome)
    out of the tokens (docs/accuracy.md, round 6). With ``normalize_total=False`` (normalized input)
    the ranking skips the per-cell normalization like :class:`RankTokenizer`; the value bins always
    use ``log1p(x / total * 1e4)``.
    """

    name = "hybrid"

    def __init__(
        self,
        max_genes: int = 2048,
        n_bins: int = 51,
        medians: np.ndarray | None = None,
        normalize_total: bool = True,
        n_hvg: int | None = 2000,
        flavor: str = "seurat_v3",
        value_bins: str = "cell",
        value_edges: np.ndarray | None = None,
    ) -> None:
        _check_bins(n_bins)
        if n_hvg is not None and n_hvg <= 0:
            raise ValueError(f"n_hvg must be positive, got {n_hvg}")
        check_flavor(flavor)
        if value_bins not in VALUE_BINS:
            raise ValueError(f"value_bins must be one of {VALUE_BINS}, got {value_bins!r}")
        self.rank = RankTokenizer(max_genes=max_genes, medians=medians, normalize_total=normalize_total)
        self.max_genes, self.n_bins = self.rank.max_genes, int(n_bins)
        self.n_hvg = None if n_hvg is None else int(n_hvg)
        self.flavor = flavor
        self.value_bins = value_bins
        self.value_edges = value_edges

    @property
    def medians(self) -> np.ndarray | None:
        """Per-gene training medians; ``NaN`` for genes that never become tokens (not HVG, never seen)."""
        return self.rank.medians

    @classmethod
    def from_config(cls, config: PrepareConfig) -> HybridTokenizer:
        """Genes as :meth:`RankTokenizer.from_config` chooses them among ``--n-hvg`` HVGs (``seurat``
        HVGs for ``--input-normalized`` data), ``--n-bins`` value bins."""
        return cls(
            max_genes=config.max_genes,
            n_bins=config.n_bins,
            normalize_total=not config.input_normalized,
            n_hvg=config.n_hvg,
            flavor=flavor_for(config),
            value_bins=config.value_bins,
        )

    def fit(self, chunks: Iterable[sp.csr_matrix], n_genes: int | None = None) -> None:
        """The rank tokenizer's gene medians, the HVGs and, for gene-wise bins, each gene's bin edges
        (``chunks`` must be re-iterable)."""
        if n_genes is None:
            n_genes = next(iter(chunks)).shape[1]
        self.rank.fit(chunks, n_genes)
        if self.n_hvg is not None and self.n_hvg < n_genes:
            keep = np.zeros(n_genes, dtype=bool)
            keep[highly_variable_genes(chunks, n_genes, self.n_hvg, self.flavor)] = True
            self.rank.medians = np.where(keep, self.rank.medians, np.nan)
            logger.info("hybrid tokenizer: ranks %d HVGs (%s) of %d genes", self.n_hvg, self.flavor, n_genes)
        if self.value_bins == "gene":
            tokenable = np.flatnonzero(~np.isnan(self.rank.medians))
            self.value_edges = gene_value_edges(chunks, n_genes, tokenable, self.n_bins)

    def _block(self, X: sp.csr_matrix, k: int) -> Block:
        totals = kernels.rows.row_totals(X.indptr, X.data, kernels.rows.exact_below(X.data.dtype))
        values = kernels.value_bins.fractions(X.indptr, X.data, totals, TARGET_SUM)
        np.log1p(values, out=values)  # numpy's log1p, as log_normalized_entries
        if self.value_bins == "gene":
            if self.value_edges is None:
                raise RuntimeError("HybridTokenizer.transform called before fit/load")
            bins = gene_bins(X.indices, values, self.value_edges)
        else:
            bins = np.empty(X.nnz, dtype=np.int16)
            kernels.value_bins.bins_csr(X.indptr, values, _quantiles(self.n_bins), bins)
        return rank_block(X, self.rank._require_fitted(), k, self.rank.normalize_total, bins=bins)

    def transform(self, X: sp.csr_matrix, previous: sp.csr_matrix | None = None) -> TokenizedCells:
        medians = self.rank._require_fitted()
        if X.shape[1] != len(medians):
            raise ValueError(f"matrix has {X.shape[1]} genes, tokenizer was fitted on {len(medians)}")
        return self._tokens(X, previous)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self.rank.save(directory)  # medians.npy + tokenizer.json, rewritten below
        state = {
            "name": self.name,
            "max_genes": self.max_genes,
            "n_bins": self.n_bins,
            "normalize_total": self.rank.normalize_total,
            "n_hvg": self.n_hvg,
            "flavor": self.flavor,
            "value_bins": self.value_bins,
            **self._value_layout(),
        }
        if self.value_edges is not None:
            np.save(directory / "value_edges.npy", self.value_edges)
        (directory / "tokenizer.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: Path) -> HybridTokenizer:
        directory = Path(directory)
        state = json.loads((directory / "tokenizer.json").read_text())
        medians = np.load(directory / "medians.npy", allow_pickle=False)
        return cls(
            max_genes=state["max_genes"],
            n_bins=state["n_bins"],
            medians=medians,
            normalize_total=state.get("normalize_total", True),
            n_hvg=state.get("n_hvg"),  # absent: saved before HVG ranking, every gene ranked
            flavor=state.get("flavor", "seurat_v3"),
            value_bins=state.get("value_bins", "cell"),
            value_edges=(
                np.load(directory / "value_edges.npy", allow_pickle=False)
                if state.get("value_bins") == "gene"
                else None
            ),
        )
