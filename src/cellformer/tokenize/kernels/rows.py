"""Per-row helpers of CSR arrays: each row's total (exact, and vectorized, for counts) and the longest
row (the size of a kernel's per-row scratch arrays)."""

from __future__ import annotations

import numpy as np
from numba import njit


def exact_below(dtype: np.dtype) -> float:
    """Below this, sums of positive integers in ``dtype`` are exact in any order, and the integers
    convert to int64 exactly (the ``below`` of :func:`count_total`)."""
    if np.dtype(dtype).kind == "f":
        return min(2.0 ** (np.finfo(dtype).nmant + 1), 2.0**53)
    return 2.0**53


@njit(cache=True)
def row_totals(indptr, data, below):
    """Per-row sums of ``data`` in float64, equal to adding a row's values one by one in order
    (as ``np.bincount`` does).

    Rows of positive integers (counts) are summed by :func:`count_total` (vectorized, exact);
    once a row holds anything else, it and every later row are summed one by one.
    """
    totals = np.zeros(len(indptr) - 1)
    counts = True
    for row in range(len(totals)):
        start, end = np.int64(indptr[row]), np.int64(indptr[row + 1])
        if end == start:
            continue
        if counts:
            counts, totals[row] = count_total(data, start, end, below)
        if not counts:
            totals[row] = _sequential_sum(data, start, end)
    return totals


@njit(cache=True)
def _sequential_sum(data, start, end):
    total = 0.0
    for p in range(start, end):
        total += data[p]
    return total


@njit(cache=True, fastmath={"reassoc"})
def count_total(data, start, end, below):
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
def max_row_length(indptr):
    longest = 0
    for row in range(len(indptr) - 1):
        longest = max(longest, indptr[row + 1] - indptr[row])
    return longest
