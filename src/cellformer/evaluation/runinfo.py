"""Facts about a run directory beyond its predictions: training log, training time, model size.

Conventions read here (see docs/design.md, "Run directory"):

- ``log.csv`` has one row per epoch with the columns ``epoch, train_loss, train_acc, train_macro_f1,
  val_loss, val_acc, val_macro_f1, lr, seconds``; ``seconds`` is the wall-clock time of that epoch, so
  the training time is their sum. Baselines have no ``log.csv``.
- A run may record its total fitting time as ``config.json["train_seconds"]`` (baselines do, as they
  have no log); it takes precedence over the log.
- The model size is the number of values stored in ``model.safetensors`` (for a kNN baseline these
  are the stored reference cells rather than learned weights).
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cellformer.preparation.prepared import PreparedData

log = logging.getLogger(__name__)


def read_log(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """Columns of ``log.csv`` as float arrays (empty cells are NaN); ``None`` when the run has no log."""
    path = Path(run_dir) / "log.csv"
    if not path.exists():
        return None
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    columns: dict[str, np.ndarray] = {}
    for name in rows[0]:
        values = []
        for row in rows:
            try:
                values.append(float(row[name]))
            except (TypeError, ValueError):
                values.append(np.nan)
        columns[name] = np.asarray(values, dtype=np.float64)
    if "epoch" not in columns:
        log.warning("%s has no 'epoch' column; learning curves are skipped", path)
        return None
    return columns


def training_seconds(config: dict[str, Any], training_log: dict[str, np.ndarray] | None) -> float | None:
    """Total training time in seconds, or ``None`` when the run recorded none."""
    if isinstance(config.get("train_seconds"), (int, float)):
        return float(config["train_seconds"])
    if training_log is not None and "seconds" in training_log:
        seconds = training_log["seconds"]
        if np.isfinite(seconds).any():
            return float(np.nansum(seconds))
    return None


def model_size(run_dir: str | Path) -> dict[str, int | None]:
    """Number of stored values and bytes of ``model.safetensors`` (``None`` when absent)."""
    path = Path(run_dir) / "model.safetensors"
    if not path.exists():
        return {"n_parameters": None, "file_bytes": None}
    from safetensors import safe_open

    n_values = 0
    with safe_open(str(path), framework="numpy") as handle:
        for name in handle.keys():
            n_values += int(np.prod(handle.get_slice(name).get_shape(), dtype=np.int64))
    return {"n_parameters": n_values, "file_bytes": path.stat().st_size}


def data_fingerprint(prepared: PreparedData, split: str) -> str:
    """SHA-256 identifying the cells of a split: input files, classes, split rows and their labels.

    Two runs can be compared only when their fingerprints for the split are equal.
    """
    digest = hashlib.sha256()
    inputs = [(i.get("sha256"), i.get("n_obs")) for i in prepared.meta.get("inputs", [])]
    digest.update(repr((inputs, prepared.meta.get("n_cells"), prepared.classes, prepared.unseen)).encode())
    rows = np.ascontiguousarray(prepared.split_rows(split), dtype=np.int64)
    digest.update(rows.tobytes())
    digest.update(np.ascontiguousarray(np.asarray(prepared.labels)[rows], dtype=np.int64).tobytes())
    return digest.hexdigest()
