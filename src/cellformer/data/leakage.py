"""Which cells are in which split, by name and by content, and the checks that keep splits apart.

A prepared dataset stores, beside ``cells.csv.gz`` (``obs_name``, ``source``, ``split`` per store row),
``cell_hashes.npy``: a 64-bit hash of each cell's expression row over the vocabulary genes (its aligned,
count-like values, exactly what the tokenizer sees). Two cells with the same hash have the same values
for every vocabulary gene.

What ``prepare`` refuses and what it reports:

- refused: a ``--test`` file that is the input itself (same SHA-256), and ``--test`` cells with the
  same expression as a training input cell over the genes both files have (the same cells, whatever
  their names: their validation/test scores would be scores on training cells);
- reported (a warning with counts, and ``meta.json["leakage"]``): ``--test`` cells named like training
  cells but with other expression (default names ``"0", "1", ...`` and 10x barcodes recur in unrelated
  files, so a name alone does not make a cell the same), duplicate ``obs_names`` inside one file, and
  cells of one file that are exact copies of each other, with how many validation/test cells have a
  copy in the training split (their scores are inflated; remove the duplicates to avoid it).
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


def _columns(X: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """``X`` with the entries of columns outside ``keep`` (a boolean mask) removed."""
    X = sp.csr_matrix(X)
    mask = keep[X.indices]
    indptr = np.r_[0, np.cumsum(mask)][X.indptr]
    return sp.csr_matrix((X.data[mask], X.indices[mask], indptr), shape=X.shape)


def hashed_chunks(
    chunks: Iterator[tuple[np.ndarray, sp.csr_matrix]],
    out: np.ndarray,
    shared: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Pass ``(rows, X)`` chunks through, writing each row's hash into ``out`` (in order); with
    ``shared=(columns mask, out2)`` also the hash over those columns only into ``out2``."""
    done = 0
    for rows, X in chunks:
        out[done : done + X.shape[0]] = row_hashes(X)
        if shared is not None:
            shared[1][done : done + X.shape[0]] = row_hashes(_columns(X, shared[0]))
        done += X.shape[0]
        yield rows, X


class CellHashes:
    """Content hashes of every kept cell of prepare's file views, filled while they are tokenized.

    ``per_file[i]``: hashes of view ``i``'s cells over the vocabulary; with a ``--test`` file
    (``has_test``: it is view 1) also ``train_shared``: the training cells' hashes over the vocabulary
    genes the test file has.
    """

    def __init__(self, views: list[Any], n_genes: int, has_test: bool) -> None:
        self.per_file = [np.zeros(len(view.rows), np.uint64) for view in views]
        self.shared_mask = None
        self.train_shared = None
        if has_test:
            self.shared_mask = np.zeros(n_genes, dtype=bool)
            self.shared_mask[views[1].col_map[views[1].col_map >= 0]] = True
            self.train_shared = np.zeros(len(views[0].rows), np.uint64)

    def wrap(
        self, i: int, chunks: Iterator[tuple[np.ndarray, sp.csr_matrix]]
    ) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
        """View ``i``'s ``(rows, X)`` chunks, passed through while their hashes are recorded."""
        shared = (self.shared_mask, self.train_shared) if i == 0 and self.train_shared is not None else None
        return hashed_chunks(chunks, self.per_file[i], shared)


def _examples(names: np.ndarray) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:_EXAMPLES])
    return f"e.g. {shown}" + (", ..." if len(names) > _EXAMPLES else "")


def check_inputs(train: Any, test: Any | None, unlabelled: list[Any] = ()) -> dict[str, Any]:
    """Before any tokenizing: refuse a ``--test`` file that is the input itself; count the ``--test``
    cells named like training cells; report duplicate names inside each file. ``train`` / ``test`` /
    ``unlabelled`` are prepare's loaded inputs."""
    if test is not None and test.sha256 == train.sha256:
        raise InputError(
            f"the --test file {test.reader.path} is the training input {train.reader.path} itself (same "
            "SHA-256): its validation and test cells would all be training cells; give a file of other "
            "cells, or omit --test to split the input into train/val/test"
        )
    for item in unlabelled:
        if item.sha256 in (train.sha256, None if test is None else test.sha256):
            raise InputError(
                f"the --unlabelled file {item.reader.path} is a labelled input itself (same SHA-256): "
                "pretraining would see the validation and test cells; give a file of other cells"
            )
    report: dict[str, Any] = {"method": HASH_METHOD, "files": {}}
    items = [train] + ([] if test is None else [test]) + list(unlabelled)
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
    train_names = np.asarray(train.reader.obs_names()[train.kept]).astype(str)
    test_names = np.asarray(test.reader.obs_names()[test.kept]).astype(str)
    shared = np.intersect1d(train_names, test_names)
    report["same_names"] = int(np.isin(test_names, shared).sum())
    report["same_name_examples"] = shared[:_EXAMPLES].tolist()
    return report


def check_contents(
    inputs: list[Any], cell_hashes: CellHashes, splits: dict[str, np.ndarray], report: dict[str, Any]
) -> dict[str, Any]:
    """After tokenizing: refuse ``--test`` cells identical to training input cells over the genes both
    files have; report test cells named like training cells, exact copies inside a file and how many
    validation/test cells have a copy in the training split."""
    hashes = cell_hashes.per_file
    if len(inputs) > 1 and inputs[1].role == "test":
        test_hashes = hashes[1]
        same = np.isin(test_hashes, cell_hashes.train_shared)
        report["same_content"] = int(same.sum())
        if same.any():
            names = np.asarray(inputs[1].reader.obs_names()[inputs[1].kept]).astype(str)
            raise InputError(
                f"{int(same.sum())} of the {len(test_hashes)} cells of the --test file "
                f"{inputs[1].reader.path} have exactly the expression of a cell of the training input "
                f"{inputs[0].reader.path} over the genes both files have ({_examples(names[same])}): they are "
                "training cells under other names, so their scores would be scores on training cells; "
                "remove them from the --test file"
            )
        if report.get("same_names"):
            log.warning(
                "%d of the %d cells of the --test file %s have the obs_name of a training input cell (%s) "
                "but other expression: kept as other cells (names like '0', '1', ... and 10x barcodes recur "
                "across files); if they are the same cells processed differently, remove them from the "
                "--test file",
                report["same_names"],
                len(test_hashes),
                inputs[1].reader.path,
                _examples(np.asarray(report["same_name_examples"])),
            )
    split_of = np.empty(sum(len(h) for h in hashes), dtype=object)
    for name, rows in splits.items():
        split_of[rows] = name
    evaluated_hashes = np.concatenate(hashes)[np.isin(split_of, ["val", "test"])]
    offset = 0
    for item, file_hashes in zip(inputs, hashes, strict=True):
        where = split_of[offset : offset + len(file_hashes)]
        offset += len(file_hashes)
        if item.role == "unlabelled":  # its cells are pretraining input: are any of them evaluated cells?
            seen = int(np.isin(file_hashes, evaluated_hashes).sum())
            report["files"].setdefault(item.source, {}).update(copies_of_eval_cells=seen)
            if seen:
                log.warning(
                    "%s: %d of its %d unlabelled cells are exact copies of validation/test cells; "
                    "pretraining on them sees those cells' expression (not their labels): remove them from "
                    "the --unlabelled file for an unbiased evaluation",
                    item.reader.path,
                    seen,
                    len(file_hashes),
                )
            continue
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
