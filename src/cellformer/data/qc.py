"""Quality control with scanpy, streamed over chunks: genes per cell, cells per gene, mitochondrial
fraction, doublets (scrublet). Each step is switchable and reports what it removed.

Per-cell metrics come from :func:`scanpy.pp.calculate_qc_metrics` on each chunk, so memory does not
grow with the number of cells. Doublet detection (:func:`scanpy.pp.scrublet`) needs a neighbour graph
over all cells of a file, so it loads that file's kept cells (it is off by default).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any

import numpy as np

from cellformer.data.read import H5adReader
from cellformer.data.validate import ValueSummary
from cellformer.text import plural
from cellformer.threads import torch_threads_kept

log = logging.getLogger(__name__)

MITO_PREFIXES = ("mt-", "mt:")  # compared in lower case: MT- (human), mt- (mouse), mt: (fly)
SYMBOL_COLUMNS = ("gene_symbols", "gene_symbol", "gene_short_name", "gene_name", "feature_name", "symbol")


def find_mito_genes(reader: H5adReader, gene_names: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Boolean mask of mitochondrial genes and where their symbols came from (``None`` if no symbols)."""
    candidates = [("gene names", gene_names)]
    for column in SYMBOL_COLUMNS:
        if column in reader.var_columns:
            candidates.append((f"var['{column}']", reader.var_column(column)))
    for where, names in candidates:
        mask = np.array([str(n).lower().startswith(MITO_PREFIXES) for n in names], dtype=bool)
        if mask.any():
            return mask, where
    return None, "no gene symbol starts with MT-/mt- (use --gene-key to pick a symbol column)"


@dataclasses.dataclass
class FileScan:
    """Per-cell QC metrics of one file and per-gene cell counts over the cells passing the cell filters."""

    n_genes: np.ndarray  # int64 (n_obs,) genes with a nonzero value
    total: np.ndarray  # float64 (n_obs,) sum of stored values
    mito_fraction: np.ndarray | None  # float64 (n_obs,) or None when not computed
    passed: np.ndarray  # bool (n_obs,) passes min_genes and max_mito_fraction
    gene_cells: np.ndarray  # int64 (n_vars,) cells (among ``passed``) expressing each gene
    values: ValueSummary


def scan_file(
    reader: H5adReader,
    *,
    chunk_size: int,
    min_genes: int,
    max_mito_fraction: float | None,
    mito: np.ndarray | None,
) -> FileScan:
    """One pass over the file: validate values and compute scanpy QC metrics chunk by chunk."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    from tqdm.auto import tqdm

    use_mito = mito is not None and max_mito_fraction is not None
    var = pd.DataFrame({"mt": mito if use_mito else np.zeros(reader.n_vars, bool)})
    var.index = var.index.astype(str)
    values = ValueSummary(reader.path, reader.matrix_name)
    n_genes, total, mito_fraction, passed = [], [], [], []
    gene_cells = np.zeros(reader.n_vars, dtype=np.int64)
    bar = tqdm(
        total=reader.n_obs, desc=f"checking {reader.path.name}", unit="cells", leave=False, disable=None
    )
    for start, X in reader.iter_blocks(chunk_size):
        values.update(X.data, start)
        X.eliminate_zeros()
        chunk = ad.AnnData(X=X, var=var)
        with torch_threads_kept():  # scanpy's numba kernels reset torch's thread count
            obs, _ = sc.pp.calculate_qc_metrics(
                chunk, qc_vars=["mt"] if use_mito else (), percent_top=None, log1p=False, inplace=False
            )
        genes = obs["n_genes_by_counts"].to_numpy(np.int64)
        keep = genes >= min_genes
        n_genes.append(genes)
        total.append(obs["total_counts"].to_numpy(np.float64))
        if use_mito:
            fraction = obs["pct_counts_mt"].to_numpy(np.float64) / 100.0
            keep &= ~(fraction > max_mito_fraction)
            mito_fraction.append(fraction)
        passed.append(keep)
        kept = X[keep]
        gene_cells += np.bincount(kept.indices[kept.data != 0], minlength=reader.n_vars)
        bar.update(X.shape[0])
    bar.close()
    return FileScan(
        n_genes=np.concatenate(n_genes),
        total=np.concatenate(total),
        mito_fraction=np.concatenate(mito_fraction) if use_mito else None,
        passed=np.concatenate(passed),
        gene_cells=gene_cells,
        values=values,
    )


def detect_doublets(reader: H5adReader, rows: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Scrublet doublet calls over ``rows`` (needs counts): a boolean mask and the scores' summary.

    The threshold on the doublet score is scrublet's own automatic one (``skimage`` minimum of the
    simulated-doublet histogram) when scikit-image is installed, else Otsu's threshold on the same
    histogram (numpy only).
    """
    import anndata as ad
    import scanpy as sc

    from cellformer.data.view import read_selected

    X = read_selected(reader, rows).astype(np.float32)
    adata = ad.AnnData(X=X)
    n_comps = int(min(30, X.shape[0] - 1, X.shape[1] - 1))
    # threshold=1 only stops scanpy from requiring scikit-image; the call is made below
    with warnings.catch_warnings(), torch_threads_kept():  # a harmless 0/0 in scrublet's summary
        warnings.simplefilter("ignore", RuntimeWarning)
        sc.pp.scrublet(
            adata,
            random_state=seed,
            n_prin_comps=max(n_comps, 2),
            threshold=1.0,
            use_approx_neighbors=False,
            verbose=False,
        )
    scores = adata.obs["doublet_score"].to_numpy(np.float64)
    simulated = np.asarray(adata.uns["scrublet"]["doublet_scores_sim"], dtype=np.float64)
    try:
        from skimage.filters import threshold_minimum

        threshold, method = float(threshold_minimum(simulated)), "skimage threshold_minimum"
    except (ImportError, RuntimeError):
        threshold, method = otsu_threshold(simulated), "otsu"
    return scores > threshold, {"threshold": threshold, "threshold_method": method}


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut of a histogram maximising the between-class variance."""
    counts, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(counts * centers) / np.maximum(weight_low, 1)
    total = (counts * centers).sum()
    mean_high = (total - np.cumsum(counts * centers)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centers[int(np.argmax(between[:-1]))])


def step(name: str, enabled: bool, **details: Any) -> dict[str, Any]:
    """One QC report entry: ``{"step", "enabled", ...}``."""
    return {"step": name, "enabled": enabled, **details}


def summary_lines(report: dict[str, Any]) -> list[str]:
    """Human-readable QC summary (logged by ``prepare``)."""
    lines = []
    for name, entry in report["files"].items():
        lines.append(f"QC {name}: {plural(entry['n_cells'], 'cell')} -> {entry['kept_cells']} kept")
        for item in entry["steps"]:
            if item["enabled"]:
                lines.append(f"  {item['step']}: removed {plural(item['removed_cells'], 'cell')}")
            else:
                lines.append(f"  {item['step']}: off ({item.get('reason', 'switched off')})")
    genes = report["genes"]
    step_ = genes["min_cells"]
    if step_["enabled"]:
        lines.append(
            f"QC genes: {genes['n_genes']} -> {genes['kept_genes']} kept "
            f"(min_cells={step_['threshold']} removed {step_['removed_genes']})"
        )
    else:
        lines.append(f"QC genes: {genes['n_genes']} kept (min_cells off)")
    return lines
