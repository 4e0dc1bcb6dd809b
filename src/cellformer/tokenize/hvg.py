"""The highly variable gene (HVG) selection: the one used by the tokenizers, the baselines and the
ancestor mapping.

Two of scanpy's flavors, computed streaming over chunks of cells (CSR), so a file never has to be
read whole:

* ``seurat_v3`` on counts: :func:`seurat_v3_scores` equals the ``variances_norm`` of
  ``scanpy.pp.highly_variable_genes(flavor="seurat_v3")`` (one batch), in two passes;
* ``seurat`` on linear-scale normalized values (``expm1`` of log1p-normalized data, FPKM, ...):
  :func:`seurat_scores` equals the ``dispersions_norm`` of
  ``scanpy.pp.highly_variable_genes(flavor="seurat")`` on the log1p of those values, in one pass.

:func:`highly_variable_genes` keeps the ``n_hvg`` best-scoring genes (:func:`top_genes`); they are
scanpy's ``highly_variable`` genes except possibly among genes tied at the cut-off score.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from cellformer.tokenize import kernels
from cellformer.tokenize.rank import _as_csr

if TYPE_CHECKING:
    from cellformer.config import PrepareConfig

HVG_FLAVORS = ("seurat_v3", "seurat")


def check_flavor(flavor: str) -> None:
    if flavor not in HVG_FLAVORS:
        raise ValueError(f"unknown HVG flavor {flavor!r}; choose one of {', '.join(HVG_FLAVORS)}")


def flavor_for(config: PrepareConfig) -> str:
    """The HVG flavor for a prepare config: ``seurat_v3`` on counts, ``seurat`` on ``--input-normalized``."""
    return "seurat" if config.input_normalized else "seurat_v3"


def highly_variable_genes(
    chunks: Iterable[sp.csr_matrix],
    n_genes: int,
    n_hvg: int,
    flavor: str,
    *,
    among: np.ndarray | None = None,
) -> np.ndarray:
    """Column indices (sorted) of the ``n_hvg`` most variable of ``n_genes`` genes, scanpy's ``flavor``
    computed streaming over ``chunks`` (re-iterable; ``seurat`` reads them once).

    ``among`` (a boolean mask over the genes) limits the genes that may be chosen; the scores are still
    those of all genes (scanpy's mean bins and loess fit see every gene). Every allowed gene is chosen
    when there are no more than ``n_hvg``; genes whose score is NaN (``seurat``: never expressed) only
    when there are not ``n_hvg`` others.
    """
    check_flavor(flavor)
    allowed = np.arange(n_genes, dtype=np.int64) if among is None else np.flatnonzero(among)
    if n_hvg >= len(allowed):
        return allowed
    score = seurat_v3_scores if flavor == "seurat_v3" else seurat_scores
    return allowed[top_genes(score(chunks, n_genes)[allowed], n_hvg)]


def top_genes(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores, sorted ascending; NaN ranks below every number.

    Ties at the cut-off go to the lower gene index. scanpy ranks with numpy's unstable default
    sort, whose order among equal scores depends on the numpy build and CPU, so the two can differ
    only among genes whose score equals the cut-off score (e.g. genes seen once with one count).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if n >= len(scores):
        return np.arange(len(scores), dtype=np.int64)
    nan = np.isnan(scores)
    order = np.lexsort((-np.where(nan, 0.0, scores), nan))  # numbers first, highest first; stable
    return np.sort(order[:n]).astype(np.int64)


@dataclasses.dataclass
class _GeneStats:
    """Streaming per-gene statistics (each summed chunk by chunk, in entry order)."""

    n_cells: int
    total: np.ndarray
    squares: np.ndarray  # squares in the data's own dtype, like scanpy
    squares64: np.ndarray  # float64 squares: the clipped pass's sum of squares where nothing is clipped
    maximum: np.ndarray


def _gene_stats(chunks: Iterable[sp.csr_matrix], n_genes: int) -> _GeneStats:
    stats = _GeneStats(0, np.zeros(n_genes), np.zeros(n_genes), np.zeros(n_genes), np.full(n_genes, -np.inf))
    for X in chunks:
        X = _as_csr(X, drop_zeros=False)  # explicit zeros add nothing (scanpy sums them too)
        data = X.data.astype(np.int64) if X.data.dtype.kind in "iu" else X.data
        sums, exact = kernels.hvg_sums.gene_sums(X.indices, data, n_genes)
        stats.n_cells += X.shape[0]
        stats.total += sums[:, 0]  # chunk by chunk, as the numpy version summed
        stats.squares += sums[:, 1]
        stats.squares64 += sums[:, 1] if exact else kernels.hvg_sums.gene_squares64(X.indices, data, n_genes)
        stats.maximum = np.maximum(stats.maximum, sums[:, 2])
    return stats


def mean_var(n_cells: int, total: np.ndarray, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and unbiased variance from the sums of values and of squares over ``n_cells`` cells
    (the one such helper). The variance is not clipped: round-off can leave it slightly below zero, as
    in scanpy, whose HVG scores this must equal; callers that standardise clip it at 0."""
    n = max(n_cells, 1)
    mean = total / n
    var = squares / n - mean**2
    if n != 1:
        var *= n / (n - 1)  # unbiased, as scanpy
    return mean, var


def seurat_v3_scores(chunks: Iterable[sp.csr_matrix], n_genes: int, span: float = 0.3) -> np.ndarray:
    """scanpy's seurat_v3 ``variances_norm`` of every gene, from count chunks in two streaming passes.

    Pass one gives each gene's mean and variance, and a loess fit of log variance on log mean the
    expected standard deviation; pass two sums the counts clipped at
    ``mean + sqrt(n_cells) * expected_sd``, for the genes with a count above that only (the others
    keep pass one's sums: the same additions), and is skipped when there are none. The score is
    the clipped standardized variance, term by term the formula of
    ``scanpy.pp.highly_variable_genes(flavor="seurat_v3")`` (one batch). ``chunks`` must be
    re-iterable.
    """
    from cellformer.errors import ConfigError, InputError

    try:
        from skmisc.loess import loess
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "the seurat_v3 HVG selection of --tokenizer binned needs scikit-misc: pip install scikit-misc"
        ) from error
    stats = _gene_stats(chunks, n_genes)
    n_cells = stats.n_cells
    mean, var = mean_var(n_cells, stats.total, stats.squares)
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

    # genes with no count above their clip value have pass one's sums; the rest are summed again
    clipped = ~(stats.maximum <= clip)  # with NaN (in the sums, so in clip) np.minimum gives NaN
    clipped_sum, clipped_squares = np.zeros(n_genes), np.zeros(n_genes)
    for X in chunks if clipped.any() else ():
        X = _as_csr(X, drop_zeros=False)
        sums = kernels.hvg_sums.clipped_gene_sums(X.indices, X.data, clip, clipped.astype(np.int32))
        clipped_sum += sums[:, 0]
        clipped_squares += sums[:, 1]
    clipped_sum = np.where(clipped, clipped_sum, stats.total)
    clipped_squares = np.where(clipped, clipped_squares, stats.squares64)
    return (1 / ((n_cells - 1) * np.square(reg_std))) * (
        n_cells * np.square(mean) + clipped_squares - 2 * clipped_sum * mean
    )


def seurat_scores(chunks: Iterable[sp.csr_matrix], n_genes: int, n_mean_bins: int = 20) -> np.ndarray:
    """scanpy's seurat ``dispersions_norm`` for non-count (linear-scale) input, one streaming pass.

    ``chunks`` hold linear-scale values (``expm1`` of log1p-normalized data, FPKM, ...): each
    gene's dispersion ``var / mean`` is z-scored within 20 bins of ``log1p(mean)``, as
    ``scanpy.pp.highly_variable_genes(flavor="seurat")`` does on the log data. Genes never
    expressed score NaN.
    """
    import pandas as pd

    stats = _gene_stats(chunks, n_genes)
    mean, var = mean_var(stats.n_cells, stats.total, stats.squares)
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):  # round-off var < 0 -> NaN, as scanpy's
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
