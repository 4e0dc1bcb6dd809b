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

from cellformer.tokenize.base import CLS, N_SPECIAL, SEP, TokenizedCells
from cellformer.tokenize.rank import RankTokenizer, _as_csr, rank_block

if TYPE_CHECKING:
    from cellformer.config import PrepareConfig

logger = logging.getLogger(__name__)

TARGET_SUM = 1e4
HVG_FLAVORS = ("seurat_v3", "seurat")


# --------------------------------------------------------------------------- binning


def log_normalized_entries(
    X: sp.csr_matrix, keep_genes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nonzero entries of ``X`` as (row, gene, ``log1p(x / total * 1e4)``), float64, CSR order.

    ``total`` is the cell's sum over all genes; ``keep_genes`` (a boolean mask over genes) limits
    the entries returned, not the totals. Same arithmetic as :func:`rank.normalized_entries`.
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
    n_edges = n_bins - 1
    out = np.zeros(len(values), dtype=np.int16)
    if len(values) == 0:
        return out
    by_row = None if np.all(rows[1:] >= rows[:-1]) else np.argsort(rows, kind="stable")
    if by_row is not None:  # callers pass CSR order; anything else is grouped by cell first
        rows, values = rows[by_row], values[by_row]
    counts = np.bincount(rows, minlength=n_cells)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    present = np.flatnonzero(counts)
    order = np.empty(len(values), dtype=np.int64)
    for start, size in zip(starts[present], counts[present], strict=True):  # faster than a lexsort
        order[start : start + size] = start + np.argsort(values[start : start + size])
    sorted_values = values[order]
    n = counts[present][:, None]
    first = starts[present][:, None]

    # np.quantile(..., method="linear") reproduced exactly, for all cells at once
    quantiles = np.linspace(0, 1, n_edges)
    virtual = (n - 1) * quantiles[None, :]  # (cells, edges)
    previous = np.floor(virtual)
    above = virtual >= n - 1
    previous_index = np.where(above, n - 1, previous.astype(np.int64))
    next_index = np.where(above, n - 1, previous_index + 1)
    gamma = virtual - np.where(above, -1, previous)
    low = sorted_values[first + previous_index]
    high = sorted_values[first + next_index]
    diff = high - low
    edges = low + diff * gamma
    upper = gamma >= 0.5
    edges[upper] = (high - diff * (1 - gamma))[upper]

    binned = np.empty(len(values), dtype=np.int64)
    for start, size, cell_edges in zip(starts[present], counts[present], edges, strict=True):
        chunk = sorted_values[start : start + size]
        left = np.searchsorted(cell_edges, chunk, side="right")  # np.digitize(v, edges)
        right = np.searchsorted(cell_edges, chunk, side="left")  # np.digitize(v, edges, right=True)
        binned[start : start + size] = (left + right + 1) // 2
    out[order if by_row is None else by_row[order]] = binned
    return out


# --------------------------------------------------------------------------- HVG selection


def _sum_and_squares(chunks: Iterable[sp.csr_matrix], n_genes: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Streaming per-gene sums and sums of squares (squares in the data's own dtype, like scanpy)."""
    n_cells, total, squares = 0, np.zeros(n_genes), np.zeros(n_genes)
    for X in chunks:
        X = _as_csr(X)
        data = X.data.astype(np.int64) if X.data.dtype.kind in "iu" else X.data
        n_cells += X.shape[0]
        total += np.bincount(X.indices, weights=data, minlength=n_genes)
        squares += np.bincount(X.indices, weights=data * data, minlength=n_genes)
    return n_cells, total, squares


def _mean_var(n_cells: int, total: np.ndarray, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = total / n_cells
    var = squares / n_cells - mean**2
    if n_cells != 1:
        var *= n_cells / (n_cells - 1)  # unbiased, as scanpy
    return mean, var


def top_genes(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores (NaN lowest), sorted ascending.

    Ties at the cut-off go to the lower gene index. scanpy ranks with numpy's unstable default
    sort, whose order among equal scores depends on the numpy build and CPU, so the two can differ
    only among genes whose score equals the cut-off score (e.g. genes seen once with one count).
    """
    scores = np.nan_to_num(scores, nan=-np.inf)
    return np.sort(np.argsort(-scores, kind="stable")[:n]).astype(np.int64)


def seurat_v3_scores(chunks: Iterable[sp.csr_matrix], n_genes: int, span: float = 0.3) -> np.ndarray:
    """scanpy's seurat_v3 ``variances_norm`` of every gene, from count chunks in two streaming passes.

    Pass one gives each gene's mean and variance, and a loess fit of log variance on log mean the
    expected standard deviation; pass two sums the counts clipped at
    ``mean + sqrt(n_cells) * expected_sd``; the score is the clipped standardized variance, term
    by term the formula of ``scanpy.pp.highly_variable_genes(flavor="seurat_v3")`` (one batch).
    ``chunks`` must be re-iterable.
    """
    from cellformer.errors import ConfigError, InputError

    try:
        from skmisc.loess import loess
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "the seurat_v3 HVG selection of --tokenizer binned needs scikit-misc: pip install scikit-misc"
        ) from error
    n_cells, total, squares = _sum_and_squares(chunks, n_genes)
    mean, var = _mean_var(n_cells, total, squares)
    not_const = var > 0
    expected = np.zeros(n_genes)
    try:
        model = loess(np.log10(mean[not_const]), np.log10(var[not_const]), span=span, degree=2)
        model.fit()
    except ValueError as error:
        raise InputError(
            f"cannot choose highly variable genes with seurat_v3 on {n_cells} training cells and "
            f"{int(not_const.sum())} variable genes ({error}); use more training cells"
        ) from error
    expected[not_const] = model.outputs.fitted_values
    reg_std = np.sqrt(10**expected)
    clip = reg_std * np.sqrt(n_cells) + mean

    clipped_sum, clipped_squares = np.zeros(n_genes), np.zeros(n_genes)
    for X in chunks:
        X = _as_csr(X)
        element = np.minimum(X.data.astype(np.float64), clip[X.indices])
        clipped_sum += np.bincount(X.indices, weights=element, minlength=n_genes)
        clipped_squares += np.bincount(X.indices, weights=element**2, minlength=n_genes)
    return (1 / ((n_cells - 1) * np.square(reg_std))) * (
        n_cells * np.square(mean) + clipped_squares - 2 * clipped_sum * mean
    )


def seurat_scores(chunks: Iterable[sp.csr_matrix], n_genes: int, n_mean_bins: int = 20) -> np.ndarray:
    """scanpy's seurat ``dispersions_norm`` for non-count (de-logged) input, one streaming pass.

    ``chunks`` hold linear-scale values (``expm1`` of log1p-normalized data, FPKM, ...): each
    gene's dispersion ``var / mean`` is z-scored within 20 bins of ``log1p(mean)``, as
    ``scanpy.pp.highly_variable_genes(flavor="seurat")`` does on the log data.
    """
    import pandas as pd

    mean, var = _mean_var(*_sum_and_squares(chunks, n_genes))
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    dispersion = np.log(dispersion)
    mean = np.log1p(mean)
    frame = pd.DataFrame({"means": mean, "dispersions": dispersion})
    frame["mean_bin"] = pd.cut(frame["means"], bins=n_mean_bins)
    stats = frame.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    single = stats["dev"].isnull()  # one gene in its bin: normalized dispersion 1, as scanpy
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0
    stats = stats.loc[frame["mean_bin"]].set_index(frame.index)
    return ((frame["dispersions"] - stats["avg"]) / stats["dev"]).to_numpy(dtype=np.float64)


# --------------------------------------------------------------------------- token assembly


def _assemble(
    blocks: list[tuple[int, int] | tuple[np.ndarray, np.ndarray, np.ndarray]], n_cells: int
) -> TokenizedCells:
    """Concatenate per-cell segments: ``(id, value)`` is one special token for every cell,
    ``(flat_ids, flat_values, counts)`` a ragged block."""
    lengths = np.zeros(n_cells, dtype=np.int64)
    for block in blocks:
        lengths += 1 if len(block) == 2 else block[2]
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    ids = np.empty(offsets[-1], dtype=np.int32)
    values = np.empty(offsets[-1], dtype=np.int16)
    cursor = offsets[:-1].copy()
    for block in blocks:
        if len(block) == 2:
            ids[cursor], values[cursor] = block
            cursor += 1
            continue
        flat_ids, flat_values, counts = block
        block_starts = np.r_[0, np.cumsum(counts)[:-1]]
        target = np.repeat(cursor, counts) + np.arange(len(flat_ids)) - np.repeat(block_starts, counts)
        ids[target] = flat_ids
        values[target] = flat_values
        cursor += counts
    return TokenizedCells(ids=ids, offsets=offsets, values=values)


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

    def _block(self, X: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _tokens(self, X: sp.csr_matrix, previous: sp.csr_matrix | None) -> TokenizedCells:
        X = _as_csr(X)
        n_cells = X.shape[0]
        if previous is None:
            return _assemble([(CLS, self.cls_value), self._block(X, self.max_genes)], n_cells)
        previous = _as_csr(previous)
        if previous.shape != X.shape:
            raise ValueError(f"previous profile has shape {previous.shape}, current has {X.shape}")
        half = max(self.max_genes // 2, 1)
        return _assemble(
            [(CLS, self.cls_value), self._block(X, half), (SEP, self.sep_value), self._block(previous, half)],
            n_cells,
        )


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
        if flavor not in HVG_FLAVORS:
            raise ValueError(f"unknown HVG flavor {flavor!r}; choose one of {', '.join(HVG_FLAVORS)}")
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
            flavor="seurat" if config.input_normalized else "seurat_v3",
        )

    def fit(self, chunks: Iterable[sp.csr_matrix], n_genes: int | None = None) -> None:
        """Choose the HVGs on the training cells (``chunks`` must be re-iterable)."""
        if n_genes is None:
            n_genes = next(iter(chunks)).shape[1]
        self.n_genes = int(n_genes)
        if self.n_hvg >= n_genes:
            self.hvg = np.arange(n_genes, dtype=np.int64)
        else:
            score = seurat_v3_scores if self.flavor == "seurat_v3" else seurat_scores
            self.hvg = top_genes(score(chunks, n_genes), self.n_hvg)
        logger.info("binned tokenizer: %d HVGs (%s) of %d genes", len(self.hvg), self.flavor, n_genes)

    def _require_fitted(self) -> np.ndarray:
        if self.hvg is None:
            raise RuntimeError("BinnedTokenizer.transform called before fit/load")
        return self.hvg

    def _block(self, X: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hvg_mask = np.zeros(X.shape[1], dtype=bool)
        hvg_mask[self._require_fitted()] = True
        rows, genes, values = log_normalized_entries(X, keep_genes=hvg_mask)
        bins = quantile_bins(rows, values, X.shape[0], self.n_bins)
        counts = np.bincount(rows, minlength=X.shape[0])
        if counts.max(initial=0) > k:  # keep the k highest values, then back to gene order
            order = np.lexsort((genes, -values, rows))
            position = np.arange(len(rows)) - np.repeat(np.r_[0, np.cumsum(counts)[:-1]], counts)
            kept = np.sort(order[position < k])  # entries are in (row, gene) order
            rows, genes, bins = rows[kept], genes[kept], bins[kept]
            counts = np.minimum(counts, k)
        return (genes + N_SPECIAL).astype(np.int32), bins, counts

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
            "value_vocab_size": self.value_vocab_size,
            "cls_value": self.cls_value,
            "sep_value": self.sep_value,
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

    The genes and their order are exactly :class:`RankTokenizer`'s (top ``max_genes`` by
    ``x / total / training median``); each gene's value id is its bin among *all* of the cell's
    nonzero genes (``log1p(x / total * 1e4)``, quantile bins as in :class:`BinnedTokenizer`), so the
    model sees the quantities scGPT keeps on the genes Geneformer would choose. With
    ``normalize_total=False`` (normalized input) the ranking skips the per-cell normalization like
    :class:`RankTokenizer`; the value bins always use ``log1p(x / total * 1e4)``.
    """

    name = "hybrid"

    def __init__(
        self,
        max_genes: int = 2048,
        n_bins: int = 51,
        medians: np.ndarray | None = None,
        normalize_total: bool = True,
    ) -> None:
        _check_bins(n_bins)
        self.rank = RankTokenizer(max_genes=max_genes, medians=medians, normalize_total=normalize_total)
        self.max_genes, self.n_bins = self.rank.max_genes, int(n_bins)

    @property
    def medians(self) -> np.ndarray | None:
        return self.rank.medians

    @classmethod
    def from_config(cls, config: PrepareConfig) -> HybridTokenizer:
        """Genes as :meth:`RankTokenizer.from_config` chooses them, ``--n-bins`` value bins."""
        return cls(
            max_genes=config.max_genes, n_bins=config.n_bins, normalize_total=not config.input_normalized
        )

    def fit(self, chunks: Iterable[sp.csr_matrix], n_genes: int | None = None) -> None:
        """Compute the rank tokenizer's gene medians (``chunks`` must be re-iterable)."""
        self.rank.fit(chunks, n_genes)

    def _block(self, X: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        medians = self.rank._require_fitted()
        ids, counts = rank_block(X, medians, k, self.rank.normalize_total)
        rows, genes, values = log_normalized_entries(X)
        bins = quantile_bins(rows, values, X.shape[0], self.n_bins)
        n_genes = np.int64(X.shape[1])
        keys = rows * n_genes + genes  # ascending: canonical CSR order
        token_keys = np.repeat(np.arange(X.shape[0], dtype=np.int64), counts) * n_genes + (ids - N_SPECIAL)
        return ids, bins[np.searchsorted(keys, token_keys)], counts

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
            "value_vocab_size": self.value_vocab_size,
            "cls_value": self.cls_value,
            "sep_value": self.sep_value,
        }
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
        )
