"""Which cells are in which split, by name and by content, and the checks that keep splits apart.

A prepared dataset stores, beside ``cells.csv.gz`` (``obs_name``, ``source``, ``split`` per store row),
``cell_hashes.npy``: a 64-bit hash of each cell's expression row over the vocabulary genes (its aligned,
count-like values, exactly what the tokenizer sees). Two cells with the same hash have the same values
for every vocabulary gene.

What ``prepare`` refuses and what it reports:

- refused: a ``--test`` file that is the input itself (same SHA-256), ``--test`` cells whose
  ``obs_name`` is also a training input cell's, and ``--test`` cells with the same expression as a
  training input cell (their validation/test scores would be scores on training cells);
- reported (a warning with counts, and ``meta.json["leakage"]``): duplicate ``obs_names`` inside one
  file, and cells of one file that are exact copies of each other, with how many validation/test cells
  have a copy in the training split (their scores are inflated; remove the duplicates to avoid it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from cellformer.errors import InputError

log = logging.getLogger(__name__)

HASH_FILE = "cell_hashes.npy"
HASH_METHOD = "splitmix64 sum over (vocabulary gene index, float32 value) of each cell's non-zero entries"
_EXAMPLES = 3


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 in, uint64 out; wraps modulo 2**64)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def row_hashes(X: sp.csr_matrix) -> np.ndarray:
    """A 64-bit content hash per row of ``X``: equal rows (same non-zero columns and values) hash equal."""
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    values = np.ascontiguousarray(X.data, dtype=np.float32).view(np.uint32).astype(np.uint64)
    keys = (X.indices.astype(np.uint64) << np.uint64(32)) | values
    mixed = _mix(keys ^ np.uint64(0x9E3779B97F4A7C15))
    nnz = np.diff(X.indptr)
    sums = np.zeros(X.shape[0], dtype=np.uint64)
    filled = nnz > 0
    if filled.any():
        with np.errstate(over="ignore"):
            sums[filled] = np.add.reduceat(mixed, X.indptr[:-1][filled])
    with np.errstate(over="ignore"):
        return _mix(sums ^ _mix(nnz.astype(np.uint64)))


def hashed_chunks(
    chunks: Iterator[tuple[np.ndarray, sp.csr_matrix]], out: np.ndarray
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Pass ``(rows, X)`` chunks through, writing each row's hash into ``out`` (in order)."""
    done = 0
    for rows, X in chunks:
        out[done : done + X.shape[0]] = row_hashes(X)
        done += X.shape[0]
        yield rows, X


def _examples(names: np.ndarray) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:_EXAMPLES])
    return f"e.g. {shown}" + (", ..." if len(names) > _EXAMPLES else "")


def check_inputs(train: Any, test: Any | None) -> dict[str, Any]:
    """Before any tokenizing: refuse a ``--test`` file that is the input or shares cell names with it;
    report duplicate names inside each file. ``train`` / ``test`` are prepare's loaded inputs."""
    report: dict[str, Any] = {"method": HASH_METHOD, "files": {}}
    items = [train] if test is None else [train, test]
    for item in items:
        names = np.asarray(item.reader.obs_names()[item.kept]).astype(str)
        unique, counts = np.unique(names, return_counts=True)
        repeated = unique[counts > 1]
        n_dup = int(counts[counts > 1].sum() - len(repeated))
        report["files"][item.source] = {"duplicate_names": n_dup}
        if n_dup:
            log.warning(
                "%s: %d of its %d kept cells repeat another cell's obs_name (%s); cells.csv.gz cannot tell "
                "them apart by name: make the names unique (adata.obs_names_make_unique())",
                item.reader.path,
                n_dup,
                len(names),
                _examples(repeated),
            )
    if test is None:
        return report
    if test.sha256 == train.sha256:
        raise InputError(
            f"the --test file {test.reader.path} is the training input {train.reader.path} itself (same "
            "SHA-256): its validation and test cells would all be training cells; give a file of other "
            "cells, or omit --test to split the input into train/val/test"
        )
    train_names = np.asarray(train.reader.obs_names()[train.kept]).astype(str)
    test_names = np.asarray(test.reader.obs_names()[test.kept]).astype(str)
    shared = np.intersect1d(train_names, test_names)
    n_shared = int(np.isin(test_names, shared).sum())
    report["same_names"] = n_shared
    if n_shared:
        raise InputError(
            f"{n_shared} of the {len(test_names)} cells of the --test file {test.reader.path} have the "
            f"obs_name of a cell of the training input {train.reader.path} ({_examples(shared)}): they look "
            "like the same cells, whose validation/test scores would be scores on training cells; remove "
            "them from the --test file, or, if they are other cells that share names (barcodes reused "
            "across samples), make the names unique first (e.g. adata.obs_names = 'sample2_' + "
            "adata.obs_names)"
        )
    return report


def check_contents(
    inputs: list[Any],
    hashes: list[np.ndarray],
    splits: dict[str, np.ndarray],
    report: dict[str, Any],
) -> dict[str, Any]:
    """After tokenizing: refuse ``--test`` cells identical to training input cells; report exact copies
    inside a file and how many validation/test cells have a copy in the training split."""
    train_hashes = hashes[0]
    if len(inputs) > 1:
        test_hashes = hashes[1]
        same = np.isin(test_hashes, train_hashes)
        report["same_content"] = int(same.sum())
        if same.any():
            names = np.asarray(inputs[1].reader.obs_names()[inputs[1].kept]).astype(str)
            raise InputError(
                f"{int(same.sum())} of the {len(test_hashes)} cells of the --test file "
                f"{inputs[1].reader.path} have exactly the expression of a cell of the training input "
                f"{inputs[0].reader.path} over every vocabulary gene ({_examples(names[same])}): they are "
                "training cells under other names, so their scores would be scores on training cells; "
                "remove them from the --test file"
            )
    split_of = np.empty(sum(len(h) for h in hashes), dtype=object)
    for name, rows in splits.items():
        split_of[rows] = name
    offset = 0
    for item, file_hashes in zip(inputs, hashes, strict=True):
        where = split_of[offset : offset + len(file_hashes)]
        offset += len(file_hashes)
        unique, inverse, counts = np.unique(file_hashes, return_inverse=True, return_counts=True)
        copies = counts[inverse] > 1
        n_copies = int((counts[counts > 1] - 1).sum())
        train_set = np.unique(file_hashes[where == "train"])
        evaluated = np.isin(where, ["val", "test"])
        inflated = int((evaluated & copies & np.isin(file_hashes, train_set)).sum())
        entry = report["files"].setdefault(item.source, {})
        entry.update(duplicate_cells=n_copies, eval_cells_copied_in_train=inflated)
        if n_copies:
            names = np.asarray(item.reader.obs_names()[item.kept]).astype(str)
            log.warning(
                "%s: %d cells are exact copies of another cell of the file (same expression over every "
                "vocabulary gene; %s); %d validation/test cells have a copy in the training split, so their "
                "scores are inflated: remove the duplicates (e.g. keep the first of each) to avoid it",
                item.reader.path,
                n_copies,
                _examples(names[copies]),
                inflated,
            )
    return report


def split_cells_sha256(hashes: np.ndarray, rows: np.ndarray) -> str:
    """SHA-256 identifying the set of cells (by content) in ``rows``: equal for the same cells."""
    import hashlib

    selected = np.sort(np.asarray(hashes, dtype=np.uint64)[np.asarray(rows, dtype=np.int64)])
    return hashlib.sha256(selected.tobytes()).hexdigest()
