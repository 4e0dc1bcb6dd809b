"""``prepare --time-key`` and ``predict``: previous-time-point profiles derived from ancestor cells.

The glue between the prepare pipeline (files, QC'd rows, splits) and the kNN ancestor mapping of
:mod:`cellformer.timecourse.mapping`: read and check the time column of every input file, fit the mapping
on the *training* cells only (their profiles streamed into the output directory), and serve each chunk's
previous profiles as a previous-profile source (see :mod:`cellformer.timecourse.previous`).

The fitted mapping is saved in ``tokenizer/previous/`` of the prepared directory, so a run directory
(which copies ``tokenizer/``) carries it and ``predict`` can map new cells with
:func:`previous_for_matrix` (:func:`ancestor_source` for an AnnData's chunks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellformer.config import PrepareConfig
from cellformer.data.read import H5adReader
from cellformer.data.view import FileView
from cellformer.errors import ConfigError, InputError
from cellformer.timecourse.mapping import AncestorMapping, check_time_points, time_codes

if TYPE_CHECKING:
    import anndata as ad

log = logging.getLogger(__name__)

MAPPING_DIR = Path("tokenizer") / "previous"  # inside a prepared or run directory
DEFAULT_K = 10
DEFAULT_COMPONENTS = 30
DEFAULT_HVG = 2000


def read_times(reader: H5adReader, time_key: str, rows: np.ndarray) -> pd.Series:
    """The time column of a file (all rows), checked on ``rows`` (the cells kept by QC): no missing
    values, orderable (numbers or an ordered categorical)."""
    values = pd.Series(reader.obs_column(time_key))
    try:
        time_codes(values.iloc[rows], time_key)
    except InputError as exc:
        raise InputError(f"{reader.path}: {exc}") from None
    return values


def check_label_not_function_of_time(
    labels: np.ndarray, times: np.ndarray, label_key: str, time_key: str
) -> None:
    """Refuse labels that are a function of time (one label per time point) among training cells."""
    frame = pd.DataFrame({"label": labels.astype(str), "time": times})
    per_time = frame.groupby("time")["label"].nunique()
    if frame["label"].nunique() > 1 and (per_time == 1).all():
        raise ConfigError(
            f"labels in {label_key!r} are a function of the time column {time_key!r} (one label per time "
            "point among the training cells); the derived previous profile reveals the time point, so "
            "it would leak the answer. Classify another column, or prepare without --time-key"
        )


def fit_mapping(
    config: PrepareConfig,
    train_view: FileView,
    train_file_rows: np.ndarray,
    train_times: pd.Series,
    directory: Path,
) -> AncestorMapping:
    """Fit the ancestor mapping on the training cells (``train_times`` aligned with
    ``train_file_rows``); saves it to ``directory`` and returns it."""
    time_key = str(config.time_key)
    positions, _ = time_codes(train_times, time_key)
    try:
        check_time_points(positions, time_key)
    except InputError as exc:
        raise InputError(f"{train_view.reader.path}: {exc}") from None
    order = np.argsort(train_file_rows, kind="stable")  # views stream rows in file order
    rows, times = train_file_rows[order], pd.Series(train_times).iloc[order].reset_index(drop=True)
    mapping = AncestorMapping(
        k=DEFAULT_K,
        n_components=DEFAULT_COMPONENTS,
        n_hvg=DEFAULT_HVG,
        normalize_total=not config.input_normalized,
        chunk_size=config.chunk_size,
    )
    log.info("fitting the ancestor mapping (time %r) on %d training cells", time_key, len(rows))
    mapping.fit(train_view.matrices(rows), times, time_key=time_key, directory=directory)
    mapping.save(directory)
    counts = dict(zip(mapping.time_points.tolist(), np.bincount(mapping.ref_time).tolist(), strict=True))
    log.info("ancestor mapping: training cells per time point %s; earliest has no previous profile", counts)
    return mapping


class AncestorPrevious:
    """Previous-profile source: each chunk's cells mapped onto their training ancestors."""

    def __init__(self, view: FileView, mapping: AncestorMapping, times: pd.Series, time_key: str) -> None:
        self.mapping = mapping
        self.times = times
        self.time_key = time_key
        self.path = view.reader.path

    def __call__(self, view: FileView, rows: np.ndarray) -> sp.csr_matrix:
        X = sp.vstack([X for _, X in view.iter_chunks(rows)], format="csr") if len(rows) else None
        if X is None:
            return sp.csr_matrix((0, view.n_genes), dtype=np.float32)
        try:
            return self.mapping.transform(X, self.times.iloc[np.sort(rows)], time_key=self.time_key)
        except InputError as exc:
            raise InputError(f"{self.path}: {exc}") from None

    def close(self) -> None:
        pass


def previous_for_matrix(
    X: sp.spmatrix, times: Sequence[Any] | pd.Series, mapping_dir: str | Path, time_key: str = "time"
) -> sp.csr_matrix:
    """Previous profiles of new cells (``X`` aligned to the vocabulary) from a saved mapping.

    ``mapping_dir`` is ``tokenizer/previous`` of a prepared or run directory. Time values must be on
    the training time axis (numbers, or categories of the saved order).
    """
    return AncestorMapping.load(mapping_dir).transform(X, times, time_key=time_key)


def ancestor_source(
    run_dir: Path, adata: ad.AnnData, time_key: str | None
) -> Callable[[sp.csr_matrix, int], sp.csr_matrix] | None:
    """For a run prepared with ``--time-key``: ``(X chunk, start) -> previous profiles`` of ``adata``'s
    cells ``start ..`` from the run's saved ancestor mapping (``tokenizer/previous``) and
    ``adata.obs[time_key]`` (``predict``); ``None`` for a run without a time course."""
    if not time_key:
        return None
    if time_key not in adata.obs.columns:
        raise InputError(
            f"run {run_dir} builds each cell's previous-time-point profile from obs[{time_key!r}], which the "
            f"input AnnData lacks; add that column (time points on the training axis)"
        )
    mapping = AncestorMapping.load(run_dir / MAPPING_DIR)
    times = adata.obs[time_key]

    def previous(X: sp.csr_matrix, start: int) -> sp.csr_matrix:
        return mapping.transform(X, times.iloc[start : start + X.shape[0]], time_key=time_key)

    return previous
