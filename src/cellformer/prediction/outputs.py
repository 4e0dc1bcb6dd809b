"""The model's outputs for new cells, chunk by chunk: read, aligned, tokenized, predicted and scored
by the unknown-cell detector, keeping only per-cell results (one process, or shared by several)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellformer.calibration.unknown import UnknownDetector
from cellformer.config import RunInput
from cellformer.preparation.new_cells import (
    TOKENIZE_CHUNK,
    cells_without_genes,
    log_overlap,
    tokenize_adata,
)
from cellformer.runs import Predictions
from cellformer.text import is_primary_process

if TYPE_CHECKING:
    from collections.abc import Callable

    import anndata as ad

    from cellformer.data.file_cells import FileCells
    from cellformer.runs import TrainedModel
    from cellformer.tokens import TokenizedCells
    from cellformer.training.multi_device import DevicePredictor

logger = logging.getLogger(__name__)


@dataclass
class CellOutputs:
    """Everything prediction computes per cell, in input order (what :func:`annotate` writes)."""

    outputs: Predictions
    overlap: dict[str, Any]
    no_genes: np.ndarray  # True: the cell expresses no model gene
    # the unknown detector's scores, computed chunk by chunk (its expression coordinates are not kept)
    scores: np.ndarray
    # True: the cell is one of the run's training cells (the same values over the model's genes)
    in_training: np.ndarray

    @property
    def n_obs(self) -> int:
        return len(self.no_genes)


def predict_chunks(
    model: TrainedModel,
    detector: UnknownDetector,
    read: Callable[[int, int], ad.AnnData],
    start: int,
    stop: int,
    *,
    chunk_size: int,
    batch_size: int = 256,
    predictor: DevicePredictor | None = None,
    every_process: bool = False,
    **options: Any,
) -> CellOutputs | None:
    """The model's outputs for the cells ``start:stop`` (``read(a, b)``: rows ``a:b`` as an AnnData), read,
    aligned, tokenized and predicted ``chunk_size`` cells at a time, keeping only per-cell results.
    ``options`` say how to read each chunk (with the transform pinned,
    :func:`~cellformer.data.align.pinned_transform`).

    With a ``predictor`` (several processes), each process reads, tokenizes and predicts its share of each
    chunk and the outputs are gathered: the first process returns them (every process with
    ``every_process``), the others ``None``."""
    from tqdm.auto import tqdm

    bounds = [(a, min(a + chunk_size, stop)) for a in range(start, stop, chunk_size)] or [(start, start)]
    quiet = stop - start < 50_000 or not is_primary_process()
    if predictor is not None:
        with tqdm(total=stop - start, desc="predicting", unit="cells", leave=False, disable=quiet) as bar:
            return _predict_shares(model, detector, read, bounds, predictor, every_process, bar, options)
    logits, embeddings, empty, scores, seen = [], [], [], [], []
    overlap: dict[str, Any] = {}
    with tqdm(total=stop - start, desc="predicting", unit="cells", leave=False, disable=quiet) as bar:
        for a, b in bounds:
            chunk = read(a, b)
            outputs, overlap, no_genes = model_outputs(
                model, chunk, batch_size=batch_size, log=False, progress=False, **options
            )
            logits.append(outputs.logits)
            embeddings.append(outputs.embeddings)
            empty.append(no_genes)
            # scored now, per chunk: only the scores are kept, not the coordinates
            coordinates, in_training = detector_inputs(model, chunk, detector, **options)
            scores.append(np.asarray(detector.scores(outputs.logits, outputs.embeddings, coordinates)))
            seen.append(in_training)
            bar.update(chunk.n_obs)
    log_overlap(overlap)
    has_embeddings = all(e is not None for e in embeddings)
    return CellOutputs(
        outputs=Predictions(
            logits=np.concatenate(logits),
            embeddings=np.concatenate(embeddings) if has_embeddings else None,
        ),
        overlap=overlap,
        no_genes=np.concatenate(empty).astype(bool),
        scores=np.concatenate(scores).astype(np.float64),
        in_training=np.concatenate(seen).astype(bool),
    )


def _predict_shares(
    model: TrainedModel,
    detector: UnknownDetector,
    read: Callable[[int, int], ad.AnnData],
    bounds: list[tuple[int, int]],
    predictor: DevicePredictor,
    every_process: bool,
    bar: Any,
    options: dict[str, Any],
) -> CellOutputs | None:
    """:func:`predict_chunks` over several processes (:mod:`cellformer.training.multi_device`)."""
    vocab_size = model.config["model"]["vocab_size"]

    def share_of(first: int):
        def prepare(start: int, stop: int) -> tuple[TokenizedCells, dict[str, np.ndarray], dict[str, Any]]:
            chunk = read(first + start, first + stop)
            tokenized, overlap = tokenize_adata(model, chunk, log=False, progress=False, **options)
            coordinates, in_training = detector_inputs(model, chunk, detector, **options)
            per_cell = {"no_genes": cells_without_genes(tokenized, vocab_size), "in_training": in_training}
            if coordinates is not None:
                per_cell["expression"] = coordinates
            return tokenized, per_cell, overlap

        return prepare

    # what is wrong with the whole input (a missing layer or obs column, too few genes) fails here, before
    # Lightning starts the other processes, with one error line
    share_of(bounds[0][0])(0, 0)
    parts: list[dict[str, np.ndarray]] = []
    overlap: dict[str, Any] = {}
    for a, b in bounds:
        arrays, overlap = predictor.predict(share_of(a), b - a)
        if every_process or predictor.is_global_zero:  # scored per chunk, as in one process
            coordinates = arrays.pop("expression", None)
            arrays["scores"] = np.asarray(
                detector.scores(arrays["logits"], arrays["embeddings"], coordinates)
            )
            parts.append(arrays)
        bar.update(b - a)
    if not parts:
        return None
    log_overlap(overlap)
    joined = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return CellOutputs(
        outputs=Predictions(logits=joined["logits"], embeddings=joined["embeddings"]),
        overlap=overlap,
        no_genes=joined["no_genes"].astype(bool),
        scores=joined["scores"].astype(np.float64),
        in_training=joined["in_training"].astype(bool),
    )


def expression_coordinates(
    model: TrainedModel, adata: ad.AnnData, detector: UnknownDetector, **options: Any
) -> np.ndarray:
    """The cells' coordinates in the unknown detector's expression space (``space = "expression"``):
    ``adata`` aligned to the run's vocabulary as for tokenizing, then the detector's features."""
    return _aligned_parts(model, adata, detector, coordinates=True, hashes=False, **options)[0]


def detector_inputs(
    model: TrainedModel, adata: ad.AnnData, detector: UnknownDetector, **options: Any
) -> tuple[np.ndarray | None, np.ndarray]:
    """What the unknown detector needs besides the model's outputs, from one alignment of ``adata``: its
    expression coordinates (``None`` unless :attr:`~UnknownDetector.needs_expression`) and which cells are
    the run's own training cells (their aligned values hash as in ``prepare``; all ``False`` for a run
    that stored no training hashes)."""
    hashes = detector.training_cells is not None
    if not detector.needs_expression and not hashes:
        return None, np.zeros(adata.n_obs, bool)
    coordinates, in_training = _aligned_parts(
        model, adata, detector, coordinates=detector.needs_expression, hashes=hashes, **options
    )
    return coordinates, np.zeros(adata.n_obs, bool) if in_training is None else in_training


def _aligned_parts(
    model: TrainedModel,
    adata: ad.AnnData,
    detector: UnknownDetector,
    *,
    coordinates: bool,
    hashes: bool,
    **options: Any,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``adata`` aligned to the run's vocabulary (as for tokenizing), ``TOKENIZE_CHUNK`` cells at a time:
    the detector's expression coordinates and / or whether each cell's hash is a training cell's."""
    from cellformer.atomic import read_json
    from cellformer.data.align import aligned_matrix, training_input_options
    from cellformer.data.leakage import row_hashes

    genes = list(read_json(Path(model.run_dir) / "vocab.json")["genes"])
    settings = {**training_input_options(model.config), **options}
    features, seen = [], []
    for start in range(0, adata.n_obs, TOKENIZE_CHUNK):
        X, _ = aligned_matrix(adata[start : start + TOKENIZE_CHUNK], genes, **settings)
        if coordinates:
            features.append(detector.expression_features(X))
        if hashes:
            seen.append(np.isin(row_hashes(X), detector.training_cells))
    width = len(detector.state.get("expression.pca_components", ()))
    return (
        (np.concatenate(features) if features else np.zeros((0, width))) if coordinates else None,
        (np.concatenate(seen) if seen else np.zeros(0, bool)) if hashes else None,
    )


def check_input_values(model: TrainedModel, adata: ad.AnnData | FileCells, **options: Any) -> dict[str, Any]:
    """Check the whole input matrix (an AnnData's or a file's, read in chunks), choose its transform
    (:func:`~cellformer.data.align.input_values`, with ``options`` over the run's training settings) and
    log what was done, in one line."""
    from cellformer.data.align import input_values, training_input_options, values_of_blocks
    from cellformer.data.file_cells import FileCells

    trained = training_input_options(model.config)
    settings = {**trained, **options}
    if isinstance(adata, FileCells):
        layer = settings.get("layer")
        values = values_of_blocks(
            adata.blocks(),
            settings.get("where", str(adata.path)),
            "X" if layer is None else f"layer '{layer}'",
            adata.matrices,
            input_normalized=bool(settings.get("input_normalized")),
            input_transform=settings.get("input_transform", "auto"),
        )
    else:
        values = input_values(adata, **settings, given=tuple(options))  # errors say whose option
    values["trained_on"] = "normalized values" if trained["input_normalized"] else "raw counts"
    if values["input_normalized"]:
        _log_values(values, model, options.get("where", "the input AnnData"), "input_normalized" in options)
    return values


def _log_values(values: dict[str, Any], model: TrainedModel, where: str, asked: bool) -> None:
    """One line: what the (normalized) values look like, what was done to them, what it costs."""
    what = f"{values['matrix']} of {where}"
    if values["integers"]:
        reason = "--input-normalized was given" if asked else "the run was trained on normalized values"
        logger.warning("%s holds integer counts, but %s: used as they are", what, reason)
        return
    tokenizer = RunInput.of(model.config).tokenizer
    if values["transform"] == "expm1":
        how = "looks log1p-normalized" if values["input_transform"] == "auto" else "is log1p (as asserted)"
        done = "values de-logged with expm1 (e.g. to counts per 10k, after normalize_total(1e4) + log1p)"
    else:
        how = "is normalized but not log1p" if values["input_transform"] == "auto" else "is normalized"
        done = "values used as they are"
    if values["trained_on"] == "normalized values":
        cost = "the run was trained on normalized values too"
    elif model.is_baseline:
        cost = (
            f"the {model.kind} run was trained on counts; its features, log1p(x / cell total * 1e4), are "
            "scale-free within a cell, so a per-cell scaling of counts gives the same features up to rounding"
        )
    elif tokenizer == "rank":
        cost = (
            "the run was trained on counts; rank tokens are scale-free within a cell, so a per-cell scaling "
            "of counts gives the same gene order up to rounding"
        )
    else:
        cost = (
            f"the run was trained on counts; {tokenizer} value tokens are per-cell quantile bins of "
            "log1p(x / cell total * 1e4), so a per-cell scaling of counts gives the same bins up to rounding"
        )
    logger.info(
        "%s %s (max %.3g): %s; %s (not so for log2, scaled or gene-length-normalized values)",
        what,
        how,
        values["max_value"],
        done,
        cost,
    )


def model_outputs(
    model: TrainedModel,
    adata: ad.AnnData,
    *,
    batch_size: int = 256,
    log: bool = True,
    progress: bool = True,
    **options: Any,
) -> tuple[Predictions, dict[str, Any], np.ndarray]:
    """Raw outputs for ``adata``, the gene-overlap report, and which cells have no expressed model gene
    (each kind of run answers: :meth:`cellformer.runs.TrainedModel.outputs`).

    ``log``: log the gene overlap; ``progress``: show progress bars (for a large ``adata``)."""
    return model.outputs(adata, batch_size=batch_size, log=log, progress=progress, **options)
