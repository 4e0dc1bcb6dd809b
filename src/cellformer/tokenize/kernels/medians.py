"""Exact nonzero medians of every gene in a few streaming passes (the rank tokenizer's fit).

Each gene's median needs the values at two ranks (low = (n - 1) // 2, high = n // 2) among its
n nonzero values: two "targets" per gene, target 2g (low) and 2g + 1 (high). Pass 1 is a per-gene
histogram over coarse key bins; each target then knows the key interval [lo, hi) holding its
rank, how many values lie below it and how many inside. Every later pass either collects the
keys of a small interval (then selects the rank among them: exact), or splits a large one into
256 sub-intervals (counting keys and the min/max key of each; the target moves to the one holding
its rank, narrowed to [min, max]), until every target is resolved. A high target whose interval
is its low target's shares that target's buffers (its "shared" mode).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellformer.tokenize.kernels.sorting import KEY_INF, key_of, select, value_of

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
