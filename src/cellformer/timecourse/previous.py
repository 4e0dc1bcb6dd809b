"""Where the time-course variant's *previous* profile of each cell comes from.

A source is any callable ``source(view, rows) -> csr_matrix``: given a file's :class:`FileView` and
the file rows of one chunk, it returns those cells' previous-time-point profiles, aligned to the
vocabulary (same rows, same columns as the current chunk). Today: a layer of the same file
(``--previous-layer``), or the mean profile of each cell's ancestor training cells at the preceding
time point (``--time-key``, :mod:`cellformer.timecourse.ancestors`). A new source is one more class here and
one more branch in :func:`make_previous_source`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from cellformer.config import PrepareConfig
from cellformer.data.read import H5adReader
from cellformer.data.validate import ValueSummary
from cellformer.data.view import FileView, align_columns, apply_transform, read_selected
from cellformer.errors import InputError


class PreviousSource(Protocol):
    def __call__(self, view: FileView, rows: np.ndarray) -> sp.csr_matrix:
        """Previous profiles of ``rows`` of ``view``'s file, aligned like the current chunk."""

    def close(self) -> None:
        """Release files."""


def open_layer(reader: H5adReader, layer: str) -> H5adReader:
    """A second reader on ``layer`` of ``reader``'s file; refuses a missing layer or another shape."""
    other = H5adReader(reader.path, layer=layer, gene_key=reader.gene_key)
    if other.shape != reader.shape:
        other.close()
        raise InputError(
            f"previous layer '{layer}' of {reader.path} has shape {other.shape}, "
            f"but {reader.matrix_name} has {reader.shape}"
        )
    return other


class LayerPrevious:
    """The previous profile stored in a layer of the same file (same genes, same value kind as X)."""

    def __init__(self, view: FileView, layer: str, counts: bool = True) -> None:
        self.layer = layer
        self.counts = counts  # raw counts expected (no --input-normalized), like X
        self.reader = open_layer(view.reader, layer)
        self.values = ValueSummary(self.reader.path, self.reader.matrix_name)

    def __call__(self, view: FileView, rows: np.ndarray) -> sp.csr_matrix:
        X = read_selected(self.reader, rows)
        self.values.update(X.data, int(rows[0]) if len(rows) else 0)
        if self.values.n_negative:
            raise InputError(
                f"{self.values.matrix} of {self.values.path} has negative values; it cannot be a profile"
            )
        if self.counts and self.values.n_fractional:
            raise InputError(
                f"{self.values.matrix} of {self.values.path} holds non-integer values while the current profile "
                "holds counts; store counts in it too, or pass --input-normalized if both are normalized"
            )
        return align_columns(apply_transform(X, view.transform), view.col_map, view.n_genes)

    def close(self) -> None:
        self.reader.close()


def make_previous_source(
    config: PrepareConfig, view: FileView, mapping: Any = None, times: Any = None
) -> PreviousSource | None:
    """The previous-profile source the config asks for, or ``None`` for the plain (one-profile) variant.

    With ``time_key``, ``mapping`` is the fitted :class:`~cellformer.timecourse.mapping.AncestorMapping`
    and ``times`` the view's file's time column (see :mod:`cellformer.timecourse.ancestors`)."""
    if config.previous_layer is not None:
        return LayerPrevious(view, config.previous_layer, counts=not config.input_normalized)
    if config.time_key is not None:
        from cellformer.timecourse.ancestors import AncestorPrevious

        if mapping is None or times is None:
            raise ValueError("time_key needs the fitted ancestor mapping and the time column")
        return AncestorPrevious(view, mapping, times, config.time_key)
    return None
