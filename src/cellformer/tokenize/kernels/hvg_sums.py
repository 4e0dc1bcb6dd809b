"""Per-gene sums over CSR entries, in entry order, for the highly variable genes (seurat_v3, seurat)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def gene_sums(indices, data, n_genes):
    """Per gene, in entry order: the sum, the sum of squares in ``data``'s dtype (as scanpy) and the
    maximum, ``(n_genes, 3)``; and whether every square was exact in ``data``'s dtype (integers below
    4096), so that the squares' sums equal those of float64 squares. (With a NaN value the sums
    are NaN.)"""
    sums = np.zeros((n_genes, 3))  # a gene's statistics side by side
    sums[:, 2] = -np.inf
    exact = True
    for p in range(len(data)):
        x, g = data[p], indices[p]
        sums[g, 0] += x
        sums[g, 1] += x * x
        sums[g, 2] = max(sums[g, 2], x)
        exact &= (x == np.floor(x)) & (abs(x) < 4096)
    return sums, exact


@njit(cache=True)
def gene_squares64(indices, data, n_genes):
    """Per gene, the sum of float64 squares, in entry order."""
    sums = np.zeros(n_genes)
    for p in range(len(data)):
        x = np.float64(data[p])
        sums[indices[p]] += x * x
    return sums


@njit(cache=True)
def clipped_gene_sums(indices, data, clip, genes):
    """Sum and sum of squares of ``np.minimum(x, clip[gene])`` (float64) per gene with
    ``genes[gene] == 1``, in entry order; ``(n_genes, 2)``, zeros for the other genes."""
    sums = np.zeros((len(clip), 2))
    for p in range(len(data)):
        g = indices[p]
        if genes[g]:
            x, c = np.float64(data[p]), clip[g]
            element = x if x < c or np.isnan(x) else c  # np.minimum, NaN-propagating
            sums[g, 0] += element
            sums[g, 1] += element * element
    return sums
