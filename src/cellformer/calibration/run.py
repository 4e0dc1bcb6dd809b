"""A run's calibration: the temperature and the unknown-cell detector, fitted on its validation split.

Every run kind is calibrated by :func:`fit_on_outputs`, from its outputs on the training and validation
cells: ``cellformer train`` through :func:`calibrate_run` (the stored run predicts the two splits, then
``unknown.json`` / ``unknown.safetensors`` are written atomically into the run directory), ``cellformer
baseline`` directly with the outputs of the model it has just fitted (written with the run). ``predict``
and ``evaluate`` only read them (:func:`stored_calibration`); a run without them is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cellformer.calibration.unknown import DEFAULT_QUANTILE, JSON_NAME, UnknownDetector
from cellformer.errors import InputError, RunDirError
from cellformer.runs import Predictions

if TYPE_CHECKING:
    from cellformer.preparation.prepared import PreparedData
    from cellformer.runs import TrainedModel

logger = logging.getLogger(__name__)


def calibrate_run(
    run_dir: str | Path,
    prepared: str | Path | PreparedData,
    *,
    quantile: float = DEFAULT_QUANTILE,
    unfinished: bool = False,
) -> UnknownDetector:
    """Fit a finished run's temperature and unknown-cell detector and store them in ``run_dir``.

    ``unfinished``: the run is still in state "training" (``train`` calibrates before it marks the run
    finished, so a finished run always has its calibration).
    """
    from cellformer.runs import load

    detector = fit_calibration(load(run_dir, unfinished=unfinished), _open(prepared), quantile=quantile)
    detector.save(run_dir)
    from cellformer.integrity import MANIFEST, write_manifest

    if (Path(run_dir) / MANIFEST).exists():  # a finished run calibrated again: record its new files
        write_manifest(run_dir, "run")
    return detector


def fit_calibration(
    model: TrainedModel, prepared: PreparedData, *, quantile: float = DEFAULT_QUANTILE
) -> UnknownDetector:
    """The detector of a stored run: its outputs on the training and validation cells, then
    :func:`fit_on_outputs` (the splits are not predicted without labelled validation cells)."""
    logger.info("calibrating %s on the validation split of %s", model.run_dir, prepared.path)
    n_classes = len(model.classes)
    if _labelled(prepared, prepared.splits.get("val", np.zeros(0, np.int64)), n_classes).any():
        train, val = model.predict_split(prepared, "train"), model.predict_split(prepared, "val")
    else:  # nothing to calibrate on: UnknownDetector.fit records "none" without needing outputs
        empty = np.zeros((0, n_classes), np.float32)
        train = val = Predictions(empty, None, np.zeros(0, np.int64))
    return fit_on_outputs(
        train,
        val,
        prepared,
        n_classes=n_classes,
        space=model.unknown_space,
        quantile=quantile,
        heads=model.member_heads,
    )


def fit_on_outputs(
    train: Predictions,
    val: Predictions,
    prepared: PreparedData,
    *,
    n_classes: int,
    space: str,
    quantile: float = DEFAULT_QUANTILE,
    heads: dict[str, np.ndarray] | None = None,
) -> UnknownDetector:
    """The temperature and unknown-cell detector of any run, from its outputs on the training cells (the
    score) and the validation cells (temperature, threshold); the one place both are fitted.

    ``train`` / ``val``: outputs with their ``rows`` in ``prepared`` (labels are looked up there).
    ``space``: what the score measures (the run's ``unknown_space``); ``"expression"`` reads the cells'
    expression from the prepared dataset's input files, falling back to ``"embedding"`` (with a warning)
    when they cannot be read. ``heads``: an ensemble's members' classifier heads (``member_heads``).
    """
    labels = np.asarray(prepared.labels)
    expression = None
    if space == "expression" and _labelled(prepared, val.rows, n_classes).any():
        expression = _expression(prepared, train.rows, val.rows)
        space = space if expression is not None else "embedding"
    detector = UnknownDetector.fit(
        (train.logits, train.embeddings, labels[train.rows]),
        (val.logits, val.embeddings, labels[val.rows]),
        n_classes,
        quantile=quantile,
        space=space,
        expression=expression,
        heads=heads,
    )
    hashes = prepared.cell_hashes  # None for a dataset prepared before the hashes were stored
    if hashes is not None:  # the training cells' content hashes, sorted and unique
        detector.training_cells = np.unique(hashes[np.asarray(train.rows, np.int64)])
    return detector


def _labelled(prepared: PreparedData, rows: np.ndarray, n_classes: int) -> np.ndarray:
    """Which of ``rows`` carry the label of a trained class (not unlabelled, not an unseen type)."""
    labels = np.asarray(prepared.labels)[rows]
    return (labels >= 0) & (labels < n_classes)


def _expression(prepared: PreparedData, train_rows: np.ndarray, val_rows: np.ndarray):
    """Expression of the training and validation cells (read again from the prepared dataset's input
    files) for the expression-space unknown score; ``None``, with a warning, when they cannot be read."""
    from cellformer.preparation.expression import PreparedExpression

    try:
        reader = PreparedExpression(prepared)
        return reader.read(train_rows), reader.read(val_rows)
    except (InputError, RunDirError, OSError) as exc:
        logger.warning(
            "the unknown score measures the <CLS> embedding instead of the cells' expression: %s", exc
        )
        return None


def stored_calibration(model: TrainedModel) -> UnknownDetector:
    """The calibration stored in the run (``unknown.json``, written by ``train`` / ``baseline``).

    Raises
    ------
    RunDirError
        The run has no stored calibration: it is incomplete or was made by another cellformer version.
    """
    run_dir = Path(model.run_dir)
    stored = UnknownDetector.load(run_dir)
    if stored is None:
        raise RunDirError(
            f"run {run_dir} has no stored calibration ({JSON_NAME}): the run is incomplete or was made by "
            "another cellformer version, so confidence cannot be calibrated nor unknown cells flagged; "
            "train it again"
        )
    return stored


def _open(prepared: str | Path | PreparedData) -> PreparedData:
    from cellformer.preparation.prepared import PreparedData

    return prepared if isinstance(prepared, PreparedData) else PreparedData(prepared)
