"""Float64 values as sortable int64 keys, the stable sort of a row's keys, and quickselect.

Positive float64 values read as int64 (their bit pattern, :func:`key_of`) sort exactly like the values.
"""

from __future__ import annotations

import numpy as np
from numba import njit

KEY_INF = np.int64(0x7FF0000000000000)  # key of +inf: every positive finite value's key is below
BUCKETS_PER_KEY = 4  # counting-sort buckets per key: few keys share one, so insertion sort rarely moves any


@njit(cache=True)
def key_of(value):
    """Sortable int64 key of a positive float64 (its bit pattern)."""
    return np.float64(value).view(np.int64)


@njit(cache=True)
def value_of(key):
    return np.int64(key).view(np.float64)


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
