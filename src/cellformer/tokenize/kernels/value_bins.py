"""Quantile bins of a row's values (``np.quantile`` and ``np.digitize``'s arithmetic) and the binned
tokens (scGPT): each row's genes with their bins, at most ``k`` (the highest values)."""

from __future__ import annotations

import numpy as np
from numba import njit

from cellformer.tokenize.kernels.rows import max_row_length
from cellformer.tokenize.kernels.sorting import BUCKETS_PER_KEY, key_of, sort_into, value_of
from cellformer.tokens import N_SPECIAL


@njit(cache=True)
def row_bins(values, quantiles, keys, order, sorted_keys, sorted_order, buckets, edges, out):
    """Bins of one cell's positive ``values`` (at least one) into ``out``; leaves the values'
    keys ascending in ``sorted_keys`` and their positions in ``sorted_order``.

    Edges are ``np.quantile(values, quantiles)`` (linear method, numpy's arithmetic), a value gets
    ``(np.digitize(v, edges) + np.digitize(v, edges, right=True) + 1) // 2``.
    """
    n = len(values)
    for i in range(n):
        keys[i], order[i] = key_of(values[i]), i
    sort_into(keys, order, n, n, sorted_keys, sorted_order, buckets)
    ascending = sorted_keys[:n].view(np.float64)  # positive values sort like their keys
    for j in range(len(quantiles)):
        previous_index, next_index, gamma = quantile_position(n, quantiles[j])
        edges[j] = lerp(ascending[previous_index], ascending[next_index], gamma)
    middle_bins(ascending, edges, keys)  # keys is free scratch now
    for i in range(n):
        out[sorted_order[i]] = keys[i]


@njit(cache=True)
def quantile_position(n, quantile):
    """numpy's linear-method ``_quantile`` of ``n`` sorted values: the two positions and the weight."""
    virtual = (n - 1) * quantile
    previous = np.floor(virtual)
    if virtual >= n - 1:
        return n - 1, n - 1, virtual + 1.0
    return int(previous), int(previous) + 1, virtual - previous


@njit(cache=True)
def lerp(low, high, gamma):
    """numpy's ``_lerp`` (the arithmetic of ``np.quantile``)."""
    diff = high - low
    return high - diff * (1 - gamma) if gamma >= 0.5 else low + diff * gamma


@njit(cache=True)
def middle_bins(ascending, edges, out):
    """``(np.digitize(v, edges) + np.digitize(v, edges, right=True) + 1) // 2`` of each of the
    ascending ``values`` into ``out``."""
    n_edges = len(edges)
    left = right = 0  # edges <= v and edges < v: both only grow along the sorted values
    for i in range(len(ascending)):
        v = ascending[i]
        while left < n_edges and edges[left] <= v:
            left += 1
        while right < n_edges and edges[right] < v:
            right += 1
        out[i] = (left + right + 1) // 2


@njit(cache=True)
def bins_csr(indptr, values, quantiles, out):
    """:func:`row_bins` for every row of a CSR layout of positive ``values``."""
    longest = max_row_length(indptr)
    keys, order = np.empty(longest, np.int64), np.empty(longest, np.int64)
    sorted_keys, sorted_order = np.empty(longest, np.int64), np.empty(longest, np.int64)
    buckets, edges = np.empty(BUCKETS_PER_KEY * longest + 1, np.int64), np.empty(len(quantiles))
    for row in range(len(indptr) - 1):
        a, b = indptr[row], indptr[row + 1]
        if b > a:
            row_bins(values[a:b], quantiles, keys, order, sorted_keys, sorted_order, buckets, edges, out[a:b])


@njit(cache=True)
def log_input(indptr, indices, data, gene_mask, totals, scale):
    """``x / total * scale`` (``totals`` from :func:`row_totals`) of the entries whose gene has
    ``gene_mask[gene] == 1`` (else 0), as a CSR layout (indptr, gene ids, values); ``log1p`` is left
    to numpy.

    One pass: each entry is written at the output's end and kept by advancing it (no branch);
    the outputs are allocated for every entry but only their used start is ever touched.
    """
    n_rows = len(indptr) - 1
    sub_indptr = np.zeros(n_rows + 1, dtype=np.int64)
    genes, values = np.empty(len(data), dtype=np.int32), np.empty(len(data))
    q = 0
    for row in range(n_rows):
        for i in range(indptr[row], indptr[row + 1]):
            genes[q], values[q] = indices[i], data[i]
            q += gene_mask[indices[i]]
        for i in range(sub_indptr[row], q):  # a loop the compiler vectorizes
            values[i] = values[i] / totals[row] * scale
        sub_indptr[row + 1] = q
    return sub_indptr, genes[:q], values[:q]


@njit(cache=True)
def fractions(indptr, data, totals, scale):
    """``x / total * scale`` of every entry."""
    values = np.empty(len(data))
    for row in range(len(indptr) - 1):
        for p in range(indptr[row], indptr[row + 1]):
            values[p] = data[p] / totals[row] * scale
    return values


@njit(cache=True)
def binned_fill(indptr, genes, values, quantiles, k, out_ids, out_values, starts):
    """Binned tokens: each row's genes in gene order with their bins, at most ``k`` per row (the
    highest values, ties by gene id), written at ``starts[row]``."""
    longest = max_row_length(indptr)
    keys, order = np.empty(longest, np.int64), np.empty(longest, np.int64)
    sorted_keys, sorted_order = np.empty(longest, np.int64), np.empty(longest, np.int64)
    buckets, edges = np.empty(BUCKETS_PER_KEY * longest + 1, np.int64), np.empty(len(quantiles))
    bins = np.empty(longest, np.int64)
    for row in range(len(indptr) - 1):
        a, n = indptr[row], indptr[row + 1] - indptr[row]
        if n == 0:
            continue
        row_values = values[a : a + n]
        row_bins(row_values, quantiles, keys, order, sorted_keys, sorted_order, buckets, edges, bins)
        threshold, quota = -np.inf, n  # keep values > threshold, and `quota` equal to it
        if n > k:
            threshold = value_of(sorted_keys[n - k])  # the k-th highest value
            quota = k
            for i in range(n - k, n):
                quota -= value_of(sorted_keys[i]) > threshold
        out = starts[row]
        for i in range(n):
            v = row_values[i]
            if v > threshold or (v == threshold and quota > 0):
                quota -= v == threshold
                out_ids[out], out_values[out] = genes[a + i] + N_SPECIAL, bins[i]
                out += 1
