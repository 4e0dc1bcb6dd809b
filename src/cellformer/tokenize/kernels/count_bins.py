"""Quantile bins and binned tokens of integer counts, from each row's distinct counts.

With integer counts a cell's value ``log1p(c / total * 1e4)`` depends on the count ``c`` only, and
a cell's kept genes share a few dozen distinct counts. So the binned tokenizer works on the distinct
counts of each cell (ascending, with how many genes have each) instead of sorting every value:
``count_entries`` lists them (counts below SMALL_COUNT through a histogram, larger ones sorted),
numpy takes the log1p of their fractions, and ``count_fill`` computes the edges, bins and top-k
from the distinct values and their multiplicities, with the arithmetic of ``row_bins`` and
``binned_fill`` (bit-identical as long as the distinct values increase strictly, which the
caller checks).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellformer.tokenize.kernels.rows import count_total, max_row_length
from cellformer.tokenize.kernels.value_bins import lerp, middle_bins, quantile_position
from cellformer.tokens import N_SPECIAL

SMALL_COUNT = 256


@njit(cache=True)
def count_entries(indptr, indices, data, gene_mask, below):
    """Kept entries (``gene_mask[gene] == 1``) of count data as CSR (indptr, gene ids, counts in
    ``data``'s dtype), and each row's total over all genes (as :func:`row_totals`). The first item
    says whether ``data`` are counts (integers in ``[1, below)``, see :func:`count_total`: an
    explicit zero counts as no count); if not, the others are empty."""
    n_rows = len(indptr) - 1
    sub_indptr, totals = np.zeros(n_rows + 1, dtype=np.int64), np.zeros(n_rows)
    genes, counts = np.empty(len(data), dtype=np.int32), np.empty_like(data)
    q = 0
    for row in range(n_rows):
        start, end = np.int64(indptr[row]), np.int64(indptr[row + 1])
        if end > start:
            are_integers, totals[row] = count_total(data, start, end, below)
            if not are_integers:
                return False, totals, sub_indptr, genes[:0], counts[:0]
            row_genes, row_data = indices[start:end], data[start:end]  # views: a faster loop
            for i in range(end - start):  # each entry is written at the end and kept by advancing
                gene = row_genes[i]
                genes[q], counts[q] = gene, row_data[i]
                q += gene_mask[gene]
        sub_indptr[row + 1] = q
    return True, totals, sub_indptr, genes[:q].copy(), counts[:q].copy()  # copies: free the rest


@njit(cache=True)
def distinct_counts(indptr, counts, totals, scale):
    """Each row's distinct counts, ascending, as CSR (indptr, counts, multiplicities, and
    ``count / total * scale``); counts below SMALL_COUNT through a histogram, larger ones sorted."""
    n_rows = len(indptr) - 1
    distinct_indptr = np.zeros(n_rows + 1, dtype=np.int64)
    distinct, multiplicity = np.empty(len(counts), dtype=np.int64), np.empty(len(counts), dtype=np.int64)
    fractions = np.empty(len(counts))
    hist = np.zeros(SMALL_COUNT, dtype=np.int64)
    large = np.empty(max_row_length(indptr), dtype=np.int64)
    d = 0
    for row in range(n_rows):
        highest, n_large = 0, 0
        for j in range(indptr[row], indptr[row + 1]):
            c = np.int64(counts[j])
            if c < SMALL_COUNT:
                hist[c] += 1
                highest = max(highest, c)
            else:
                large[n_large] = c
                n_large += 1
        for c in range(1, highest + 1):
            if hist[c]:
                distinct[d], multiplicity[d] = c, hist[c]
                hist[c] = 0
                d += 1
        if n_large:
            big = np.sort(large[:n_large])
            for j in range(n_large):
                if j > 0 and big[j] == big[j - 1]:
                    multiplicity[d - 1] += 1
                else:
                    distinct[d], multiplicity[d] = big[j], 1
                    d += 1
        for j in range(distinct_indptr[row], d):
            fractions[j] = np.float64(distinct[j]) / totals[row] * scale
        distinct_indptr[row + 1] = d
    return distinct_indptr, distinct[:d], multiplicity[:d], fractions[:d]


@njit(cache=True)
def increasing_rows(indptr, values):
    """Whether ``values`` increase strictly within every row of a CSR layout."""
    for row in range(len(indptr) - 1):
        for p in range(indptr[row] + 1, indptr[row + 1]):
            if not values[p] > values[p - 1]:
                return False
    return True


@njit(cache=True)
def count_fill(entries, distinct_counts, quantiles, k, out_ids, out_values, starts):
    """:func:`binned_fill` from :func:`count_entries`' kept ``entries`` (indptr, genes, counts)
    and their ``distinct_counts`` (indptr, counts, multiplicities, values: the log1p of
    :func:`distinct_counts`' fractions, strictly increasing within each row)."""
    indptr, genes, counts = entries
    distinct_indptr, distinct, multiplicity, values = distinct_counts
    edges = np.empty(len(quantiles))
    slot = np.zeros(SMALL_COUNT, dtype=np.int64)  # count -> its distinct index in the row
    bins = np.empty(max_row_length(distinct_indptr), dtype=np.int64)
    for row in range(len(indptr) - 1):
        a, n = indptr[row], indptr[row + 1] - indptr[row]
        if n == 0:
            continue
        da, nd = distinct_indptr[row], distinct_indptr[row + 1] - distinct_indptr[row]
        row_values, row_multiplicity = values[da : da + nd], multiplicity[da : da + nd]
        p, end = 0, row_multiplicity[0]  # distinct index of a rank, and the rank after its run
        for j in range(len(quantiles)):  # as row_bins, the sorted values being runs of distinct ones
            previous_index, next_index, gamma = quantile_position(n, quantiles[j])
            while previous_index >= end:
                p += 1
                end += row_multiplicity[p]
            edges[j] = lerp(row_values[p], row_values[p] if next_index < end else row_values[p + 1], gamma)
        middle_bins(row_values, edges, bins)
        threshold, quota = -1, n  # keep distinct indices > threshold, and `quota` equal to it
        if n > k:
            threshold, above = nd - 1, 0  # the distinct index of the k-th highest value
            while above + row_multiplicity[threshold] < k:
                above += row_multiplicity[threshold]
                threshold -= 1
            quota = k - above
        for i in range(nd):
            if distinct[da + i] < SMALL_COUNT:
                slot[distinct[da + i]] = i
        out = starts[row]
        if threshold < 0 and distinct[da + nd - 1] < SMALL_COUNT:  # the common case: a plain map
            for i in range(n):
                out_ids[out + i] = genes[a + i] + N_SPECIAL
                out_values[out + i] = bins[slot[np.int64(counts[a + i])]]
            continue
        for i in range(a, a + n):
            c = np.int64(counts[i])
            s = slot[c] if c < SMALL_COUNT else np.searchsorted(distinct[da : da + nd], c)
            if s > threshold or (s == threshold and quota > 0):
                quota -= s == threshold
                out_ids[out], out_values[out] = genes[i] + N_SPECIAL, bins[s]
                out += 1
