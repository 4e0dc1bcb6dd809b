"""Expression of a prepared dataset's cells, read again from its input files.

A prepared directory stores tokens, not expression; the baselines (and the unknown-cell detector's
expression space) need the expression of exactly the same cells. ``cells.csv.gz`` lists every store
row's ``obs_name`` and ``source`` file (kept rows of each file, in file order) and ``meta.json`` the
files, their SHA-256 and how values were read (matrix, ``gene_key``, ``value_transform``). Files are
opened read-only with the chunked reader and must be unchanged since ``prepare``.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cellformer.errors import InputError, RunDirError
from cellformer.preparation.prepared import PreparedData

log = logging.getLogger(__name__)


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def _fingerprint(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so evaluating val and test hashes once."""
    from cellformer.provenance import file_fingerprint

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = file_fingerprint(path)
    return _FINGERPRINTS[key]


class PreparedExpression:
    """Count-like expression (log1p undone as in ``prepare``) of store rows, aligned to the vocabulary."""

    def __init__(self, prepared: PreparedData, check_files: bool = True) -> None:
        self.prepared = prepared
        self.check_files = check_files

    @cached_property
    def cells(self):
        import pandas as pd

        path = self.prepared.path / "cells.csv.gz"
        if not path.exists():
            raise RunDirError(f"prepared dataset {self.prepared.path} has no cells.csv.gz; prepare it again")
        return pd.read_csv(
            path, dtype={"obs_name": str, "source": str, "split": str, "label": str}, keep_default_na=False
        )

    def _inputs(self) -> list[dict]:
        inputs = self.prepared.meta.get("inputs", [])
        if not inputs:
            raise RunDirError(f"{self.prepared.path}/meta.json lists no input files")
        return inputs

    def _file_rows(self, reader, names_in_store: np.ndarray) -> np.ndarray:
        """File row of each store cell of this file (store order = ascending file rows)."""
        file_names = reader.obs_names()
        rows = np.empty(len(names_in_store), dtype=np.int64)
        cursor = 0
        for i, name in enumerate(names_in_store):
            while cursor < len(file_names) and file_names[cursor] != name:
                cursor += 1
            if cursor == len(file_names):
                raise InputError(
                    f"cell {name!r} of {self.prepared.path}/cells.csv.gz is not in {reader.path} (in order); "
                    "the file changed since `cellformer prepare`: prepare it again"
                )
            rows[i] = cursor
            cursor += 1
        return rows

    def read(self, rows: np.ndarray) -> sp.csr_matrix:
        """Expression of store ``rows`` (any order), ``(len(rows), n_genes)`` float32 CSR."""
        from cellformer.data.read import H5adReader
        from cellformer.data.view import FileView, column_map

        rows = np.asarray(rows, dtype=np.int64)
        config = self.prepared.meta.get("config", {})
        genes = self.prepared.genes
        cells = self.cells
        sources = cells["source"].to_numpy()
        blocks, block_rows = [], []
        for item in self._inputs():
            path = Path(item["path"])
            if not path.exists():
                raise InputError(
                    f"input file {path} of prepared dataset {self.prepared.path} no longer exists; the baselines "
                    "read expression from it: put it back or prepare again"
                )
            if self.check_files and item.get("sha256") and _fingerprint(path) != item["sha256"]:
                raise InputError(
                    f"input file {path} changed since `cellformer prepare` (SHA-256 differs from "
                    f"{self.prepared.path}/meta.json); prepare again"
                )
            in_file = np.flatnonzero(sources == item.get("source", path.name))  # whole paths when names clash
            wanted = rows[np.isin(rows, in_file)]
            if len(wanted) == 0:
                continue
            with H5adReader(path, layer=config.get("layer"), gene_key=config.get("gene_key")) as reader:
                file_rows_all = self._file_rows(reader, cells["obs_name"].to_numpy()[in_file])
                position = np.searchsorted(in_file, wanted)
                file_rows = file_rows_all[position]
                view = FileView(
                    reader,
                    path.name,
                    np.sort(file_rows),
                    column_map(reader.gene_names(), genes),
                    len(genes),
                    item.get("value_transform", "none"),
                    int(config.get("chunk_size", 2048)),
                )
                chunks = [(r, X) for r, X in view.iter_chunks()]
            X = sp.vstack([X for _, X in chunks]).tocsr() if chunks else sp.csr_matrix((0, len(genes)))
            read_rows = np.concatenate([r for r, _ in chunks]) if chunks else np.zeros(0, np.int64)
            # map back: read_rows are sorted unique file rows; wanted store rows -> their file rows
            blocks.append(X[np.searchsorted(read_rows, file_rows)])
            block_rows.append(wanted)
        if not blocks and len(rows) == 0:
            return sp.csr_matrix((0, len(genes)), dtype=np.float32)
        order_rows = np.concatenate(block_rows) if blocks else np.zeros(0, np.int64)
        if len(order_rows) != len(rows):
            raise RunDirError(
                f"{len(rows) - len(order_rows)} requested cells have no source file in {self.prepared.path}"
            )
        X = sp.vstack(blocks).tocsr()
        lookup = np.argsort(order_rows, kind="stable")
        position = lookup[np.searchsorted(order_rows[lookup], rows)]
        return X[position].astype(np.float32)
