"""Seeded, label-stratified splits that never crash on tiny classes.

Every class is split on its own with the given fractions (rounded, at least one cell for each split
with a nonzero fraction). A class with fewer cells than there are such splits cannot be stratified: all
its cells go to the ``home`` split, and the report lists it under ``small_classes``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def stratified_split(
    labels: np.ndarray,
    fractions: dict[str, float],
    *,
    home: str,
    seed: int,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split positions ``0..len(labels)-1`` by label.

    Parameters
    ----------
    labels
        One label per cell (strings).
    fractions
        Split name → fraction of each class (summing to 1).
    home
        The split that receives the remainder after rounding, and whole classes too small to stratify.
    seed
        Seed of the permutation within each class (classes are visited in sorted order).

    Returns
    -------
    Split name → sorted int64 positions, and a report with per-class counts and the small classes.
    """
    labels = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(seed)
    active = [name for name, f in fractions.items() if f > 0 and name != home]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in fractions}
    per_class: dict[str, dict[str, int]] = {}
    small: dict[str, dict[str, Any]] = {}
    for label in sorted(set(labels.tolist())):
        members = rng.permutation(np.flatnonzero(labels == label))
        n = len(members)
        sizes = {name: 0 for name in fractions}
        if n < len(active) + 1:
            sizes[home] = n
            small[label] = {"n_cells": n, "all_in": home}
        else:
            for name in active:
                sizes[name] = max(1, int(np.floor(n * fractions[name] + 0.5)))
            while n - sum(sizes[name] for name in active) < 1:  # keep at least one cell at home
                largest = max(active, key=lambda name: sizes[name])
                sizes[largest] -= 1
            sizes[home] = n - sum(sizes[name] for name in active)
        start = 0
        for name in fractions:
            parts[name].append(members[start : start + sizes[name]])
            start += sizes[name]
        per_class[label] = sizes
    splits = {
        name: np.sort(np.concatenate(chunks)).astype(np.int64) if chunks else np.zeros(0, np.int64)
        for name, chunks in parts.items()
    }
    report = {
        "fractions": fractions,
        "seed": seed,
        "sizes": {name: int(len(rows)) for name, rows in splits.items()},
        "per_class": per_class,
        "small_classes": small,
    }
    return splits, report
