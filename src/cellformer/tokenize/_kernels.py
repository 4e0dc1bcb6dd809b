"""Numba kernels of the tokenizers: loops over the rows of CSR arrays ``(indptr, indices, data)``.

Every kernel expects a canonical CSR matrix without explicit zeros (``rank._as_csr``), so a
row's entries are its nonzero genes in ascending gene order. Float arithmetic is the one of the
plain numpy code it replaces, operation for operation (no ``fastmath``), so results are
bit-identical; ``log1p`` stays in numpy (its SIMD version may differ from libm in the last bit).

Orderings use the bits of positive float64 values read as int64 ("keys"), which sort exactly like
the values. Kernels are compiled on first use and cached on disk (``cache=True``); a cell's
scratch arrays are allocated once per call, for the longest row.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellformer.tokens import N_SPECIAL

KEY_INF = np.int64(0x7FF0000000000000)
BUCKETS_PER_KEY = 4  # counting-sort buckets per key: few keys share one, so insertion sort rarely moves any  # key of +inf: every positive finite value's key is below

# --------------------------------------------------------------------------- shared helpers


@njit(cache=True)
def key_of(value):
    """Sortable int64 key of a positive float64 (its bit pattern)."""
    return np.float64(value).view(np.int64)


@njit(cache=True)
def value_of(key):
    return np.int64(key).view(np.float64)


def exact_below(dtype: np.dtype) -> float:
    """Below this, sums of positive integers in ``dtype`` are exact in any order, and the integers
    convert to int64 exactly (the ``below`` of :func:`_count_total`)."""
    if np.dtype(dtype).kind == "f":
        return min(2.0 ** (np.finfo(dtype).nmant + 1), 2.0**53)
    return 2.0**53


@njit(cache=True)
def row_totals(indptr, data, below):
    """Per-row sums of ``data`` in float64, equal to adding a row's values one by one in order
    (as ``np.bincount`` does).

    Rows of positive integers (counts) are summed by :func:`_count_total` (vectorized, exact);
    once a row holds anything else, it and every later row are summed one by one.
    """
    totals = np.zeros(len(indptr) - 1)
    counts = True
    for row in range(len(totals)):
        start, end = np.int64(indptr[row]), np.int64(indptr[row + 1])
        if end == start:
            continue
        if counts:
            counts, totals[row] = _count_total(data, start, end, below)
        if not counts:
            totals[row] = _sequential_sum(data, start, end)
    return totals


@njit(cache=True)
def _sequential_sum(data, start, end):
    total = 0.0
    for p in range(start, end):
        total += data[p]
    return total


@njit(cache=True)
def max_row_length(indptr):
    longest = 0
    for row in range(len(indptr) - 1):
        longest = max(longest, indptr[row + 1] - indptr[row])
    return longest


@njit(cache=True)
def _insertion_sort(keys, order, lo, hi):
    """Stable in-place sort of ``keys[lo:hi]`` (``order`` follows); fast on almost sorted input."""
    for i in range(lo + 1, hi):
        key, item = keys[i], order[i]
        j = i - 1
        while j >= lo and keys[j] > key:
            keys[j + 1], order[j + 1] = keys[j], order[j]
            j -= 1
        keys[j + 1], order[j + 1] = key, item


@njit(cache=True)
def sort_into(keys, order, n, limit, sorted_keys, sorted_order, buckets):
    """Stable ascending sort of ``keys[:n]`` into ``sorted_keys[:n]``, ``order`` following into
    ``sorted_order``; equal keys keep their order. Only the first ``limit`` positions are
    guaranteed sorted (top-k needs no more).

    One counting-sort pass on the top bits of ``key - min`` (one or two keys per bucket) leaves
    every key in its bucket, so one insertion-sort pass over the buckets up to ``limit`` finishes
    (its work is the few swaps within buckets; buckets of more than 64 keys, from many near-equal
    keys, are merge-sorted first): several times faster than numba's ``np.argsort`` on the few
    hundred to few thousand entries of a cell. ``n >= 1``; ``buckets`` holds
    ``BUCKETS_PER_KEY * n + 1`` items.
    """
    low, high = keys[0], keys[0]
    for i in range(1, n):
        low, high = min(low, keys[i]), max(high, keys[i])
    n_buckets = 1
    while 2 * n_buckets <= BUCKETS_PER_KEY * n:
        n_buckets *= 2
    shift = 0
    while ((high - low) >> shift) >= n_buckets:
        shift += 1
    buckets[: n_buckets + 1] = 0
    for i in range(n):
        buckets[((keys[i] - low) >> shift) + 1] += 1
    largest = 0
    for b in range(n_buckets):
        largest = max(largest, buckets[b + 1])
        buckets[b + 1] += buckets[b]
    for i in range(n):
        b = (keys[i] - low) >> shift
        sorted_keys[buckets[b]], sorted_order[buckets[b]] = keys[i], order[i]
        buckets[b] += 1
    end = n  # buckets[b] is now the end of bucket b; sort up to the end of limit's bucket
    if largest > 64 or limit < n:
        start = 0
        for b in range(n_buckets):
            if start >= limit:
                end = start
                break
            if buckets[b] - start > 64 and not _is_sorted(sorted_keys, start, buckets[b]):
                by_key = np.argsort(sorted_keys[start : buckets[b]], kind="mergesort")
                sorted_keys[start : buckets[b]] = sorted_keys[start : buckets[b]][by_key]
                sorted_order[start : buckets[b]] = sorted_order[start : buckets[b]][by_key]
            start = buckets[b]
    _insertion_sort(sorted_keys, sorted_order, 0, end)


@njit(cache=True)
def _is_sorted(keys, lo, hi):
    for i in range(lo + 1, hi):
        if keys[i] < keys[i - 1]:
            return False
    return True


# --------------------------------------------------------------------------- exact nonzero medians
#
# Each gene's median needs the values at two ranks (low = (n - 1) // 2, high = n // 2) among its
# n nonzero values: two "targets" per gene, target 2g (low) and 2g + 1 (high). Pass 1 is a per-gene
# histogram over coarse key bins; each target then knows the key interval [lo, hi) holding its
# rank, how many values lie below it and how many inside. Every later pass either collects the
# keys of a small interval (then selects the rank among them: exact), or splits a large one into
# 256 sub-intervals (counting keys and the min/max key of each; the target moves to the one holding
# its rank, narrowed to [min, max]), until every target is resolved. A high target whose interval
# is its low target's shares that target's buffers (its "shared" mode).

SHIFT0 = 50  # key >> 50: sign, 11 exponent and 2 mantissa bits, 4 bins per octave
N_BINS0 = 128
BASE0 = (1023 << 2) - (N_BINS0 - 2)  # 1.0 falls in bin N_BINS0 - 2, values below ~2 ** -31 in bin 0
PENDING, SAME_AS_LOW, NOT_EXPRESSED = -1, -2, -3  # target values that are not keys yet
IDLE, SPLIT, COLLECT, SPLIT_SHARED, COLLECT_SHARED = 0, 1, 2, 3, 4  # what a target does in a pass
N_SUB = 256  # sub-intervals of a split


@njit(cache=True)
def bin0(key):
    return min(max((key >> SHIFT0) - BASE0, 0), N_BINS0 - 1)


@njit(cache=True)
def median_histogram(indptr, indices, data, totals, hist):
    """Pass 1: ``hist[gene, bin0(key(x / total))] += 1`` over every entry."""
    for row in range(len(indptr) - 1):
        for p in range(indptr[row], indptr[row + 1]):
            hist[indices[p], bin0(key_of(data[p] / totals[row]))] += 1


@njit(cache=True)
def median_targets(hist, rank, below, count, lo, hi, value):
    """Place each gene's two targets in their pass-1 bin (arrays hold ``2 * n_genes`` targets)."""
    for gene in range(hist.shape[0]):
        n = np.int64(0)
        for b in range(N_BINS0):
            n += hist[gene, b]
        for side in range(2):
            t = 2 * gene + side
            if n == 0:
                value[t] = NOT_EXPRESSED
                continue
            rank[t] = (n - 1) // 2 if side == 0 else n // 2
            if side == 1 and rank[t] == rank[t - 1]:
                value[t] = SAME_AS_LOW
                continue
            cumulative, b = 0, 0
            while rank[t] >= cumulative + hist[gene, b]:
                cumulative += hist[gene, b]
                b += 1
            below[t], count[t] = cumulative, hist[gene, b]
            lo[t] = 0 if b == 0 else (BASE0 + b) << SHIFT0
            hi[t] = KEY_INF if b == N_BINS0 - 1 else (BASE0 + b + 1) << SHIFT0
            value[t] = PENDING


@njit(cache=True)
def median_plan(count, lo, hi, value, mode, slot, shift, gate, max_collect, budget_bytes):
    """Choose what each pending target does in the next pass, within ``budget_bytes`` of buffers.

    ``gate[gene]`` becomes the key interval covering the gene's active targets (a quick test per
    entry). Returns (number of split rows, number of collected values). Targets over budget wait
    for a later pass; at least one target is always served, so every pass makes progress.
    """
    gate[:] = 0
    n_split, n_collect, used = 0, 0, 0
    for t in range(len(value)):
        mode[t] = IDLE
        if value[t] != PENDING:
            continue
        if hi[t] - lo[t] == 1:  # one possible key left: it is the value
            value[t] = lo[t]
            continue
        if t % 2 == 1 and mode[t - 1] != IDLE and lo[t] == lo[t - 1] and hi[t] == hi[t - 1]:
            mode[t], slot[t], shift[t] = mode[t - 1] + 2, slot[t - 1], shift[t - 1]  # *_SHARED
            continue
        collect = count[t] <= max_collect
        cost = 8 * count[t] if collect else 24 * N_SUB  # 8-byte keys; or count, min, max per sub
        if used > 0 and used + cost > budget_bytes:
            continue
        used += cost
        gene = t // 2
        if gate[gene, 1] == 0:
            gate[gene, 0], gate[gene, 1] = lo[t], hi[t]
        gate[gene, 0], gate[gene, 1] = min(gate[gene, 0], lo[t]), max(gate[gene, 1], hi[t])
        if collect:
            mode[t], slot[t] = COLLECT, n_collect
            n_collect += count[t]
        else:
            mode[t], slot[t] = SPLIT, n_split
            n_split += 1
            shift[t] = 0
            while ((hi[t] - lo[t] - 1) >> shift[t]) >= N_SUB:
                shift[t] += 1
    return n_split, n_collect


@njit(cache=True)
def median_pass(
    indptr, indices, data, totals, gate, lo, hi, mode, slot, shift, filled, sub_count, sub_min, sub_max, kept
):
    """One later pass: route each entry's key to its gene's targets that are active and contain it."""
    for row in range(len(indptr) - 1):
        for p in range(indptr[row], indptr[row + 1]):
            key = key_of(data[p] / totals[row])
            gene = indices[p]
            if key < gate[gene, 0] or key >= gate[gene, 1]:
                continue
            for t in range(2 * gene, 2 * gene + 2):
                if key < lo[t] or key >= hi[t] or not (mode[t] == COLLECT or mode[t] == SPLIT):
                    continue
                s = slot[t]
                if mode[t] == COLLECT:
                    kept[s + filled[t]] = key
                    filled[t] += 1
                else:
                    sub = (key - lo[t]) >> shift[t]
                    sub_count[s, sub] += 1
                    sub_min[s, sub] = min(sub_min[s, sub], key)
                    sub_max[s, sub] = max(sub_max[s, sub], key)


@njit(cache=True)
def median_resolve(rank, below, count, lo, hi, value, mode, slot, sub_count, sub_min, sub_max, kept):
    """After a pass: collected targets select their rank among the kept keys; split targets move
    to the sub-interval holding their rank, narrowed to the keys seen there. A shared target reads
    the buffers of its low target (the next rank of the same keys, or the same sub counts)."""
    for t in range(len(value)):
        s = slot[t]
        if mode[t] == COLLECT:
            position = s + rank[t] - below[t]
            value[t] = select(kept, s, s + count[t], position)
            if t % 2 == 0 and mode[t + 1] == COLLECT_SHARED:  # rank + 1: smallest key after it
                value[t + 1] = kept[position + 1 : s + count[t]].min()
        elif mode[t] == SPLIT or mode[t] == SPLIT_SHARED:
            cumulative, sub = below[t], 0
            while rank[t] >= cumulative + sub_count[s, sub]:
                cumulative += sub_count[s, sub]
                sub += 1
            below[t], count[t] = cumulative, sub_count[s, sub]
            lo[t], hi[t] = sub_min[s, sub], sub_max[s, sub] + 1
            if hi[t] - lo[t] == 1:
                value[t] = lo[t]


@njit(cache=True)
def select(keys, lo, hi, k):
    """Rearrange ``keys[lo:hi]`` so that ``keys[k]`` is what sorting would put there and every
    key after it is not smaller; returns ``keys[k]`` (quickselect, three-way partitions)."""
    while hi - lo > 1:
        a, b, c = keys[lo], keys[(lo + hi) // 2], keys[hi - 1]
        pivot = max(min(a, b), min(max(a, b), c))  # median of three
        below, i, above = lo, lo, hi  # [lo, below) < pivot, [below, i) == pivot, [above, hi) > pivot
        while i < above:
            if keys[i] < pivot:
                keys[below], keys[i] = keys[i], keys[below]
                below += 1
                i += 1
            elif keys[i] > pivot:
                above -= 1
                keys[above], keys[i] = keys[i], keys[above]
            else:
                i += 1
        if k < below:
            hi = below
        elif k >= above:
            lo = above
        else:
            break
    return keys[k]


@njit(cache=True)
def medians_from_targets(value):
    """``(low + high) / 2`` per gene (``np.median``'s arithmetic), NaN where not expressed."""
    medians = np.empty(len(value) // 2)
    for gene in range(len(medians)):
        low = value[2 * gene]
        if low == NOT_EXPRESSED:
            medians[gene] = np.nan
            continue
        high = low if value[2 * gene + 1] == SAME_AS_LOW else value[2 * gene + 1]
        medians[gene] = (value_of(low) + value_of(high)) / 2.0
    return medians


# --------------------------------------------------------------------------- rank tokens


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


# --------------------------------------------------------------------------- quantile bins


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


# --------------------------------------------------------------------------- quantile bins of counts
#
# With integer counts a cell's value ``log1p(c / total * 1e4)`` depends on the count ``c`` only, and
# a cell's kept genes share a few dozen distinct counts. So the binned tokenizer works on the distinct
# counts of each cell (ascending, with how many genes have each) instead of sorting every value:
# ``count_entries`` lists them (counts below SMALL_COUNT through a histogram, larger ones sorted),
# numpy takes the log1p of their fractions, and ``count_fill`` computes the edges, bins and top-k
# from the distinct values and their multiplicities, with the arithmetic of ``row_bins`` and
# ``binned_fill`` (bit-identical as long as the distinct values increase strictly, which the
# caller checks).

SMALL_COUNT = 256


@njit(cache=True, fastmath={"reassoc"})
def _count_total(data, start, end, below):
    """(whether ``data[start:end]`` are integers in ``[1, below)``, their sum) in ``data``'s dtype,
    in any order (vectorized): non-negative integers add exactly, so equal to adding them one by
    one in float64, while the sum stays below ``below`` (where sums in the dtype are exact); a sum
    at or above it is added one by one in float64 instead."""
    total = data[start] - data[start]  # zero in data's dtype (a float32 sum vectorizes widest)
    counts = True
    for p in range(start, end):
        x = data[p]
        total += x
        counts &= (x > 0) & (x == np.floor(x)) & (x < below)
    if np.float64(total) < below:
        return counts, np.float64(total)
    return counts, _sequential_sum(data, start, end)


@njit(cache=True)
def count_entries(indptr, indices, data, gene_mask, below):
    """Kept entries (``gene_mask[gene] == 1``) of count data as CSR (indptr, gene ids, counts in
    ``data``'s dtype), and each row's total over all genes (as :func:`row_totals`). The first item
    says whether ``data`` are counts (integers in ``[1, below)``, see :func:`_count_total`: an
    explicit zero counts as no count); if not, the others are empty."""
    n_rows = len(indptr) - 1
    sub_indptr, totals = np.zeros(n_rows + 1, dtype=np.int64), np.zeros(n_rows)
    genes, counts = np.empty(len(data), dtype=np.int32), np.empty_like(data)
    q = 0
    for row in range(n_rows):
        start, end = np.int64(indptr[row]), np.int64(indptr[row + 1])
        if end > start:
            are_integers, totals[row] = _count_total(data, start, end, below)
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


# --------------------------------------------------------------------------- seurat_v3 sums


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
