"""Rank tokens (Geneformer): each row's top genes by ``x / total / median``, descending."""

from __future__ import annotations

import numpy as np
from numba import njit

from cellformer.tokenize.kernels.rows import max_row_length
from cellformer.tokenize.kernels.sorting import BUCKETS_PER_KEY, KEY_INF, key_of, sort_into
from cellformer.tokens import N_SPECIAL


@njit(cache=True)
def rank_counts(indptr, indices, medians, k):
    """Tokens per row: genes with a median (not NaN), at most ``k``."""
    counts = np.zeros(len(indptr) - 1, dtype=np.int64)
    for row in range(len(counts)):
        n = 0
        for p in range(indptr[row], indptr[row + 1]):
            n += not np.isnan(medians[indices[p]])
        counts[row] = min(n, k)
    return counts


@njit(cache=True)
def rank_fill(indptr, indices, data, totals, medians, k, bins, out_ids, out_values, starts):
    """Write each row's top-``k`` genes by ``x / total / median`` (descending, ties by gene id) at
    ``out_ids[starts[row]:]``; with ``len(bins) > 0`` also each token's entry bin into ``out_values``."""
    longest = max_row_length(indptr)
    keys, order = np.empty(longest, np.int64), np.empty(longest, np.int64)
    sorted_keys, sorted_order = np.empty(longest, np.int64), np.empty(longest, np.int64)
    buckets = np.empty(BUCKETS_PER_KEY * longest + 1, np.int64)
    for row in range(len(indptr) - 1):
        n = 0
        for p in range(indptr[row], indptr[row + 1]):
            median = medians[indices[p]]
            if not np.isnan(median):
                keys[n] = KEY_INF - key_of(
                    (data[p] / totals[row]) / median
                )  # ascending key = descending score
                order[n] = p  # entry order = gene order: the stable sort breaks ties by gene id
                n += 1
        if n == 0:
            continue
        n_out = min(n, k)
        sort_into(keys, order, n, n_out, sorted_keys, sorted_order, buckets)
        start = starts[row]
        for j in range(n_out):
            out_ids[start + j] = indices[sorted_order[j]] + N_SPECIAL
            if len(bins):
                out_values[start + j] = bins[sorted_order[j]]
