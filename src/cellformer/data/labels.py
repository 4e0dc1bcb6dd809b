"""Label columns that are surely a mistake: too many classes to be cell types, a test file with other labels.

Missing labels (NaN, ``""``, ``"nan"``, ``"None"``, ...) are handled where labels are read
(:func:`cellformer.data.validate.labels_as_strings`): those cells are left out and counted in one line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from cellformer.errors import InputError
from cellformer.text import natural_key

MIN_CLASSES_CHECKED = 50  # more distinct labels than this, and ...
MAX_CLASS_SHARE = 0.1  # ... more than this share of the labelled cells, or ...
MAX_SINGLETON_SHARE = 0.25  # ... this share of the classes on one cell each: not a column of cell types


def listing(values: Sequence[str], limit: int = 8) -> str:
    """``a, b, c, ... (20 in all)``: at most ``limit`` values, each quoted."""
    shown = ", ".join(repr(v) for v in values[:limit])
    return f"{shown}, ... ({len(values)} in all)" if len(values) > limit else shown


def check_class_count(labels: np.ndarray, path: Path, key: str, *, allow_many: bool = False) -> None:
    """Refuse a label column with more distinct values than cell types would have (``n_counts``, ids).

    ``labels`` are the file's labels as strings (``None`` where missing). Refused when there are more
    than :data:`MIN_CLASSES_CHECKED` classes and either more than :data:`MAX_CLASS_SHARE` of the labelled
    cells or more than :data:`MAX_SINGLETON_SHARE` of them single-cell classes (a measured value seen
    once), unless ``allow_many`` (``--allow-many-classes``).
    """
    counts = Counter(label for label in labels.tolist() if label is not None)
    n_cells, n_classes = sum(counts.values()), len(counts)
    singletons = sum(1 for n in counts.values() if n == 1)
    many = n_classes > MAX_CLASS_SHARE * n_cells or singletons > MAX_SINGLETON_SHARE * n_classes
    if allow_many or n_classes <= MIN_CLASSES_CHECKED or not many:
        return
    examples = [label for label, _ in counts.most_common(5)]
    raise InputError(
        f"label column '{key}' of {path} has {n_classes} distinct values among {n_cells} labelled cells "
        f"({singletons} of them on a single cell; e.g. {', '.join(map(repr, examples))}): it looks like a "
        "measurement or an identifier, not cell types. Choose the cell-type column with --label-key, or "
        "pass --allow-many-classes (allow_many_classes=True) if these really are the classes"
    )


def check_test_labels(train_classes: Iterable[str], test_labels: np.ndarray, path: Path, key: str) -> None:
    """Refuse a ``--test`` file none of whose labels is a training class (e.g. ``1..16`` vs ``class_1..16``)."""
    classes = list(train_classes)
    seen = set(classes)
    test = sorted({label for label in test_labels.tolist() if label is not None}, key=natural_key)
    if test and not seen.intersection(test):
        raise InputError(
            f"none of the labels in column '{key}' of the test file {path} is a class of the training cells, "
            f"so no test cell could ever be right: test labels {listing(test)}; training classes "
            f"{listing(classes)}. Make the two files name cell types the same way (or choose --label-key)"
        )
