"""``cellformer.predict``: a run directory + AnnData → an annotated copy of the AnnData.

Works for every kind of run (transformer or baseline). Keys written (``key_added="cellformer"``;
existing keys of that name are replaced, with a warning):

- ``obs['cellformer_prediction']``: predicted class, categorical over *all* trained classes
- ``obs['cellformer_confidence']``: calibrated maximum probability (the temperature stored in the run,
  fitted on its validation split; ``T = 1`` for a run without validation cells)
- ``obs['cellformer_unknown']``: ``True`` for a cell unlike every training type (see :mod:`cellformer.calibration.unknown`)
  and for every cell with no expressed model gene (nothing to classify it by)
- ``obs['cellformer_unknown_score']``: the score behind that flag (higher = less like any training type;
  ``cellformer_unknown`` is exactly ``score > params['unknown']['threshold']``); ``inf`` for cells with no
  expressed model gene, NaN for every cell of a run without validation cells (no threshold, no flag)
- ``obsm['cellformer_proba']``: calibrated class probabilities, columns in ``uns['cellformer']['classes']``
- ``obsm['X_cellformer']``: the model's embedding (``params['embedding']`` says which: ``<CLS>`` for the
  transformer, the principal components of the training features for logreg / kNN, the hidden layer
  for the MLP)
- ``obsm['X_cellformer_umap']``: 2-d UMAP of ``X_cellformer`` (only from :func:`predict_file` with a plot)
- ``uns['cellformer']``: ``classes`` and ``params`` (run, kind, gene overlap, input values and the
  transform applied to them, calibration, unknown-cell rule, versions)

Calibration (temperature, unknown-cell threshold) is read from the run directory, never written to it
(:mod:`cellformer.calibration.run`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellformer.annotations import score_quantiles
from cellformer.calibration.unknown import DEFAULT_QUANTILE, UnknownDetector
from cellformer.config import RunInput
from cellformer.errors import ConfigError, InputError
from cellformer.preparation.new_cells import (
    TOKENIZE_CHUNK,
    cells_without_genes,
    log_overlap,
    tokenize_adata,
)
from cellformer.runs import Predictions
from cellformer.text import is_primary_process, plural

if TYPE_CHECKING:
    from collections.abc import Callable

    import anndata as ad

    from cellformer.data.file_cells import FileCells
    from cellformer.runs import TrainedModel
    from cellformer.tokens import TokenizedCells
    from cellformer.training.multi_device import DevicePredictor

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 20_000  # cells read, tokenized and predicted at a time; per-cell results are kept
UMAP_MAX_CELLS = 50_000  # above this, predict_file draws no UMAP unless asked (umap=True / --umap)
INPUT_TRANSFORMS = ("auto", "log1p", "none")  # as prepare's --input-transform
ACCELERATORS = ("cpu", "gpu", "auto")  # where a transformer's forward pass runs (Lightning's names)


def predict(
    adata: ad.AnnData,
    run_dir: str | Path,
    *,
    batch_size: int = 256,
    key_added: str = "cellformer",
    copy: bool = True,
    layer: str | None = None,
    gene_key: str | None = None,
    min_gene_overlap: float | None = None,
    unknown_quantile: float = DEFAULT_QUANTILE,
    source: str | Path | None = None,
    input_normalized: bool | None = None,
    input_transform: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    accelerator: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
) -> ad.AnnData | None:
    """Annotate cells with a trained model's predictions.

    Parameters
    ----------
    adata
        Cells to annotate; genes are matched to the model's by name (missing genes count as zero,
        extra genes are ignored). Read the same matrix as in training (see ``layer``).
    run_dir
        A run directory from ``cellformer train`` or ``cellformer baseline``.
    batch_size
        Cells per forward pass.
    key_added
        Prefix of the keys written (see the module docstring); existing keys are replaced with a warning.
    copy
        Return an annotated copy (default) and leave ``adata`` untouched; ``False`` annotates ``adata``
        in place and returns ``None``.
    layer, gene_key
        Override the matrix (``"raw.X"`` for ``adata.raw``) and gene-name column the model was trained with.
    min_gene_overlap
        Minimum fraction (in (0, 1]) of the model's genes that must be present (default: the training
        setting, ``prepare``'s ``min_gene_overlap``, 0.5 unless changed).
    unknown_quantile
        Quantile of the validation cells' unknown scores used as the threshold: about
        ``1 - unknown_quantile`` of cells of known types are flagged by design (default 0.95: ~5 %).
    source
        What error messages call ``adata`` (e.g. the file it was read from; default "the input AnnData").
    input_normalized, input_transform
        The values are normalized, not raw counts (``prepare``'s options of the same names): log1p is
        detected (``input_transform="auto"``) or asserted (``"log1p"``) and undone with ``expm1``;
        ``"none"`` uses the values as they are. ``None``: as the run's training data was read. A run
        trained on counts then sees the de-logged values, which it tokenizes as it would their counts
        (see ``docs/predict.md``). The transform applied is logged and recorded in ``params['input']``.
    chunk_size
        Cells aligned, tokenized and predicted at a time (the same results for any value;
        :func:`predict_file` reads a file this many cells at a time).
    accelerator, devices, num_nodes
        Where a transformer's forward pass runs. One process (the default): in this one, on a GPU where
        there is one (``"auto"``), or on the CPU / the first CUDA GPU (``"cpu"`` / ``"gpu"``).
        ``devices * num_nodes > 1``: that many processes through Lightning's ``Trainer.predict``
        (:mod:`cellformer.training.multi_device`; ``devices`` per node): Lightning starts the script again
        once per extra device (or a scheduler such as SLURM starts them all), each process predicts a
        share of each chunk, and every process returns the same annotated copy (so write files from the
        first process only). The results are those of one process. Baseline runs have no forward pass to
        spread: ``devices * num_nodes > 1`` is refused for them.

    Returns
    -------
    The annotated copy, or ``None`` with ``copy=False``.
    """
    from cellformer.data.align import pinned_transform

    model, detector, options, predictor = _setup(
        run_dir,
        batch_size=batch_size,
        key_added=key_added,
        chunk_size=chunk_size,
        unknown_quantile=unknown_quantile,
        source=source,
        layer=layer,
        gene_key=gene_key,
        min_gene_overlap=min_gene_overlap,
        input_normalized=input_normalized,
        input_transform=input_transform,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
    )
    values = check_input_values(model, adata, **options)
    options.update(pinned_transform(values))  # every chunk gets the transform chosen on the whole matrix
    cells = predict_chunks(
        model,
        detector,
        lambda start, stop: adata[start:stop],
        0,
        adata.n_obs,
        chunk_size=chunk_size,
        batch_size=batch_size,
        predictor=predictor,
        every_process=True,
        **options,
    )
    assert cells is not None
    target = adata.copy() if copy else adata
    annotate(target, model, cells, detector, key_added=key_added, batch_size=batch_size, values=values)
    return target if copy else None


def _setup(
    run_dir: str | Path,
    *,
    batch_size: int,
    key_added: str,
    chunk_size: int,
    unknown_quantile: float,
    source: str | Path | None,
    accelerator: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    **given: Any,
) -> tuple[TrainedModel, UnknownDetector, dict[str, Any], DevicePredictor | None]:
    """Check the options, load the run and its calibration; ``options`` for reading the input, and the
    predictor running the forward pass in several processes (``None``: in this one)."""
    from cellformer.calibration.run import stored_calibration
    from cellformer.runs import load

    processes = check_devices(accelerator, devices, num_nodes)
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ConfigError(f"chunk_size must be a positive number of cells, got {chunk_size!r}")
    check_key_added(key_added)
    min_gene_overlap = given.get("min_gene_overlap")
    if min_gene_overlap is not None and not 0.0 < min_gene_overlap <= 1.0:
        raise ConfigError(f"min_gene_overlap must be a fraction in (0, 1], got {min_gene_overlap}")
    if not 0.0 < unknown_quantile <= 1.0:
        raise ConfigError(f"unknown_quantile must be in (0, 1], got {unknown_quantile}")
    input_transform = given.get("input_transform")
    if input_transform is not None and input_transform not in INPUT_TRANSFORMS:
        raise ConfigError(f"input_transform must be auto, log1p or none, got {input_transform!r}")
    if input_transform is not None and not given.get("input_normalized"):
        raise ConfigError(
            f"input_transform={input_transform!r} describes normalized values: add input_normalized=True "
            "(raw counts are always used as they are)"
        )
    model = load(run_dir)
    predictor = _place(model, accelerator, devices, num_nodes, processes, batch_size)
    detector = stored_calibration(model)
    try:
        detector = detector.with_quantile(unknown_quantile)
    except ValueError as exc:
        raise ConfigError(
            f"cannot use unknown_quantile {unknown_quantile} with run {run_dir}: {exc} "
            f"({detector.quantile}); train it again to choose another"
        ) from None
    names = {"min_gene_overlap": "min_overlap"}
    options = {names.get(k, k): v for k, v in given.items() if v is not None}
    if source is not None:
        options["where"] = str(source)
    return model, detector, options, predictor


def check_devices(accelerator: str, devices: int, num_nodes: int) -> int:
    """Refuse devices prediction cannot run on (in one line); returns the number of processes."""
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"--accelerator {accelerator} (accelerator= in Python) must be cpu, gpu or auto")
    for flag, name, what, value in (
        ("--devices", "devices", "processes per node", devices),
        ("--num-nodes", "num_nodes", "nodes", num_nodes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{flag} {value} ({name}= in Python) must be a positive number of {what}; 1 is the default"
            )
    if accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"--accelerator gpu needs a CUDA GPU, but torch {torch.__version__} sees none on this "
                "machine; pass --accelerator cpu (or auto: a GPU where there is one) or run on a GPU machine"
            )
        visible = torch.cuda.device_count()
        if devices > visible:
            raise ConfigError(
                f"--devices {devices} with --accelerator gpu, but only {plural(visible, 'CUDA GPU')} "
                f"{'is' if visible == 1 else 'are'} visible on this machine; pass at most that many "
                "--devices (per node)"
            )
    return devices * num_nodes


def _place(
    model: TrainedModel, accelerator: str, devices: int, num_nodes: int, processes: int, batch_size: int
) -> DevicePredictor | None:
    """Put a transformer on its device (one process), or set up the processes that share its forward
    pass (several). A baseline predicts in this process, on the CPU."""
    if model.is_baseline:
        if processes > 1:
            raise ConfigError(
                f"run {model.run_dir} is a {model.kind} baseline: it has no neural forward pass to spread "
                "over devices and predicts in one process on the CPU; drop --devices / --num-nodes "
                "(devices= / num_nodes=), or use --shard K/N to split a large file into jobs"
            )
        if accelerator == "gpu":
            logger.info("a %s run predicts on the CPU: --accelerator gpu does not change it", model.kind)
        return None
    if processes == 1:
        import torch

        model.use_device({"cpu": torch.device("cpu"), "gpu": torch.device("cuda")}.get(accelerator))
        return None
    from cellformer.training.multi_device import DevicePredictor

    return DevicePredictor(
        model.model,
        Path(model.run_dir),
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        batch_size=batch_size,
    )


@dataclass
class CellOutputs:
    """Everything prediction computes per cell, in input order (what :func:`annotate` writes)."""

    outputs: Predictions
    overlap: dict[str, Any]
    no_genes: np.ndarray  # True: the cell expresses no model gene
    # the unknown detector's scores, computed chunk by chunk (its expression coordinates are not kept)
    scores: np.ndarray

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
    logits, embeddings, empty, scores = [], [], [], []
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
            coordinates = (
                expression_coordinates(model, chunk, detector, **options)
                if detector.needs_expression
                else None
            )  # scored now, per chunk: only the scores are kept, not the coordinates
            scores.append(np.asarray(detector.scores(outputs.logits, outputs.embeddings, coordinates)))
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
            per_cell = {"no_genes": cells_without_genes(tokenized, vocab_size)}
            if detector.needs_expression:
                per_cell["expression"] = expression_coordinates(model, chunk, detector, **options)
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
    )


def expression_coordinates(
    model: TrainedModel, adata: ad.AnnData, detector: UnknownDetector, **options: Any
) -> np.ndarray:
    """The cells' coordinates in the unknown detector's expression space (``space = "expression"``):
    ``adata`` aligned to the run's vocabulary as for tokenizing, then the detector's features."""
    from cellformer.atomic import read_json
    from cellformer.data.align import aligned_matrix, training_input_options

    genes = list(read_json(Path(model.run_dir) / "vocab.json")["genes"])
    settings = {**training_input_options(model.config), **options}
    parts = []
    for start in range(0, adata.n_obs, TOKENIZE_CHUNK):
        X, _ = aligned_matrix(adata[start : start + TOKENIZE_CHUNK], genes, **settings)
        parts.append(detector.expression_features(X))
    width = len(detector.state.get("expression.pca_components", ()))
    return np.concatenate(parts) if parts else np.zeros((0, width))


def check_key_added(key_added: str) -> None:
    """Refuse a ``key_added`` that cannot name AnnData keys in an ``.h5ad`` (empty, or with ``/``)."""
    if not isinstance(key_added, str) or not key_added.strip() or "/" in key_added:
        raise ConfigError(
            f"--key-added {key_added!r} (key_added= in Python) cannot prefix AnnData keys: give a non-empty name "
            "without '/' (h5ad stores keys as HDF5 paths), e.g. cellformer or cellformer_v2"
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


# -- model outputs ------------------------------------------------------------------------------
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


# -- writing into the AnnData -------------------------------------------------------------------
def annotate(
    adata: ad.AnnData,
    model: TrainedModel,
    cells: CellOutputs,
    detector: UnknownDetector,
    *,
    key_added: str = "cellformer",
    batch_size: int = 256,
    values: dict[str, Any] | None = None,
    extra_params: dict[str, Any] | None = None,
) -> None:
    """Write predictions into ``adata`` (in place) under ``key_added``.

    Cells with no expressed model gene (``cells.no_genes``) are flagged unknown. ``values`` (from
    :func:`check_input_values`) is recorded as ``params['input']``; ``extra_params`` are added to
    ``params`` (e.g. the shard a piece of a file is).
    """
    outputs, overlap, no_genes = cells.outputs, cells.overlap, cells.no_genes
    import pandas as pd

    from cellformer.calibration.temperature import softmax
    from cellformer.provenance import cellformer_version, package_versions

    if outputs.logits.shape[0] != adata.n_obs:
        raise ValueError(f"{outputs.logits.shape[0]} predictions for {adata.n_obs} cells")
    temperature = detector.temperature
    proba = softmax(outputs.logits, temperature).astype(np.float32)
    best = proba.argmax(axis=1) if len(proba) else np.zeros(0, np.int64)
    classes = list(model.classes)
    scores = np.array(cells.scores, dtype=np.float64)  # a copy: cells without genes are set to inf below
    if detector.calibrated:
        scores[no_genes] = np.inf  # nothing to classify them by: above any threshold
    unknown = (scores > detector.threshold) | no_genes
    if no_genes.any():
        logger.warning(
            "%d cells express none of the model's genes (empty rows or no gene in the vocabulary): "
            "flagged unknown (%s_unknown); their predicted label carries no information",
            int(no_genes.sum()),
            key_added,
        )
    existing = [
        f"{where}['{key}']"
        for where, keys, names in (
            ("obs", adata.obs.columns, ("prediction", "confidence", "unknown", "unknown_score")),
            ("obsm", adata.obsm.keys(), ("proba",)),
        )
        for key in (f"{key_added}_{n}" for n in names)
        if key in keys
    ]
    existing += [
        f"{w}['{k}']"
        for w, k in (("obsm", f"X_{key_added}"), ("uns", key_added))
        if k in (adata.obsm if w == "obsm" else adata.uns)
    ]
    if existing:
        logger.warning(
            "the AnnData already has %s: replacing them (choose another key_added / --key-added to keep both)",
            ", ".join(existing),
        )
    adata.obs[f"{key_added}_prediction"] = pd.Categorical.from_codes(best, categories=classes)
    adata.obs[f"{key_added}_confidence"] = proba.max(axis=1) if len(proba) else np.zeros(0, np.float32)
    adata.obs[f"{key_added}_unknown"] = np.asarray(unknown, dtype=bool)
    adata.obs[f"{key_added}_unknown_score"] = scores.astype(np.float32)
    adata.obsm[f"{key_added}_proba"] = proba
    if outputs.embeddings is not None:
        adata.obsm[f"X_{key_added}"] = np.asarray(outputs.embeddings, dtype=np.float32)
    params: dict[str, Any] = {
        "run_dir": str(Path(model.run_dir).resolve()),
        "kind": model.kind,
        "batch_size": int(batch_size),
        "gene_overlap": {k: (float(v) if k == "fraction" else int(v)) for k, v in overlap.items()},
        "temperature": float(temperature),
        "calibration": _calibration_params(detector),
        "n_no_genes": int(no_genes.sum()),
        **({} if values is None else {"input": _input_params(values)}),
        "embedding": model.embedding_name,
        "cellformer_version": cellformer_version(),
        "versions": {k: v for k, v in package_versions().items() if k != "platform"},
    }
    record = RunInput.of(model.config)
    params["tokenizer"] = record.tokenizer
    params["label_key"] = record.label_key
    params["unknown"] = unknown_params(detector, scores[~no_genes], key_added)
    params["unknown"]["flagged_fraction"] = float(np.mean(unknown)) if len(unknown) else 0.0
    params.update(extra_params or {})
    adata.uns[key_added] = {"classes": np.array(classes, dtype=object), "params": params}
    n_unknown = int(np.sum(unknown))
    logger.info(
        "%d cells annotated by %s run %s; %d (%.1f%%) flagged unknown; %s; %s",
        adata.n_obs,
        model.kind,
        model.run_dir,
        n_unknown,
        100 * n_unknown / max(adata.n_obs, 1),
        calibration_note(params),
        unknown_note(params),
    )


def unknown_params(detector: UnknownDetector, scores: np.ndarray, key_added: str) -> dict[str, Any]:
    """``params['unknown']``: the rule (score, threshold, FPR target) and the scores' quantiles."""
    if not detector.calibrated:
        return {
            "method": "none",
            "score_key": f"{key_added}_unknown_score",
            "rule": "no validation cells: only cells with no expressed model gene are flagged "
            "(the score is NaN: nothing to set a threshold on)",
        }
    return {
        "method": detector.method,
        "score": detector.method,
        "score_key": f"{key_added}_unknown_score",
        "score_description": f"{detector.description} (higher = less like any training type)",
        "space": detector.space,
        "threshold": float(detector.threshold),
        "quantile": float(detector.quantile),
        "fpr_target": float(detector.fpr_target),
        "val_flagged_fraction": float(detector.info.get("val_flagged_fraction", float("nan"))),
        "rule": f"{key_added}_unknown_score above {detector.threshold:.6g}, the {detector.quantile:g} quantile "
        f"of the validation cells' scores (validation cells are all of known types: about "
        f"{100 * detector.fpr_target:.0f}% of cells of known types are flagged by design), "
        "or no expressed model gene",
        "score_quantiles": score_quantiles(scores),
    }


def unknown_note(params: dict[str, Any]) -> str:
    """One phrase on the unknown score: its name, distribution and threshold (for summaries)."""
    rule = params.get("unknown", {})
    if rule.get("method", "none") == "none" or "score_quantiles" not in rule:
        return "no unknown score (run without validation cells)"
    shown = ", ".join(f"{int(k[1:])}% {v:.3g}" for k, v in rule["score_quantiles"].items())
    return (
        f"unknown score {rule['score']} (higher = less like any training type): {shown}; "
        f"threshold {rule['threshold']:.3g} (flags {100 * rule['fpr_target']:.0f}% of validation cells)"
    )


def _input_params(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "matrix": str(values["matrix"]),
        "input_normalized": bool(values["input_normalized"]),
        "input_transform": str(values["input_transform"]),
        "transform_applied": str(values["transform"]),
        "max_value": float(values["max_value"]),
        "trained_on": str(values.get("trained_on", "")),
    }


def _calibration_params(detector: UnknownDetector) -> dict[str, Any]:
    fit = detector.temperature_fit
    return {
        "calibrated": detector.calibrated,
        "temperature": float(detector.temperature),
        "decision": fit.decision,
        "fitted_temperature": float(fit.fitted),
        "n_val_cells": int(fit.n_cells),
    }


def calibration_note(params: dict[str, Any]) -> str:
    """One phrase on how confidence was calibrated (for summaries)."""
    cal = params.get("calibration", {})
    if not cal.get("calibrated", True):
        return "run has no validation cells: confidence NOT calibrated (T=1), no unknown-type flag"
    return f"confidence calibrated on {cal.get('n_val_cells', '?')} validation cells (T={cal['temperature']:.2f})"


# -- files (the CLI) ----------------------------------------------------------------------------
def predict_file(
    run_dir: str | Path,
    input: str | Path,
    *,
    out: str | Path,
    overwrite: bool = False,
    batch_size: int = 256,
    umap: bool | None = None,
    key_added: str = "cellformer",
    compression: str | None = "gzip",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    annotations_only: bool = False,
    shard: str | tuple[int, int] | None = None,
    accelerator: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    **options: Any,
) -> dict[str, Path]:
    """Annotate the cells of the file ``input`` (never modified, never read whole) into ``out``.

    The input is read ``chunk_size`` cells at a time (:class:`~cellformer.data.file_cells.FileCells`);
    each chunk is aligned, tokenized and predicted, and only per-cell results are kept, so memory is set
    by ``chunk_size`` and ``batch_size``, not by the number of cells. What is written (atomically):

    - by default, an annotated copy of ``input`` (the file copied, the annotations written into it;
      :func:`~cellformer.annotations.write_annotated_copy`);
    - with ``annotations_only``, the annotations alone: a small ``.h5ad`` and ``OUT.csv`` beside it;
    - with ``shard="K/N"``, the annotations of the K-th of N contiguous pieces of the cells (as
      ``annotations_only``), for scheduler array jobs; :func:`~cellformer.annotations.merge_annotations`
      joins the pieces.

    ``umap``: draw ``OUT_umap.png`` (``None``: only up to :data:`UMAP_MAX_CELLS` cells, said in one line
    above). ``accelerator``, ``devices``, ``num_nodes`` and ``options`` are :func:`predict`'s; with
    several processes each reads and predicts its share of every chunk, and only the first writes.
    Returns the paths written (``h5ad``, and ``csv`` / ``umap`` when written); ``{}`` in the other
    processes of a multi-process run.
    """
    from cellformer.annotations import (
        parse_shard,
        shard_rows,
        table_path,
        write_annotated_copy,
        write_annotations,
    )
    from cellformer.atomic import check_writable
    from cellformer.data.file_cells import FileCells, is_modern_h5ad
    from cellformer.runs import read_run_config, verify_run

    input, out = Path(input), Path(out)
    read_run_config(run_dir)  # fail early on a bad run directory
    verify_run(run_dir)  # ... or a damaged one (cellformer.integrity), before reading the input
    check_key_added(key_added)
    piece = None if shard is None else parse_shard(shard)
    annotations_only = annotations_only or piece is not None
    if input.is_dir():
        raise InputError(f"input {input} is a directory; give an .h5ad file")
    if not input.is_file():
        raise InputError(f"input file {input} does not exist")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give the path of the .h5ad file to write")
    if out.resolve() == input.resolve() or (
        annotations_only and table_path(out).resolve() == input.resolve()
    ):
        raise ConfigError(
            f"--out {out} is the input file; cellformer never overwrites its input: choose another path"
        )
    if out.suffix != ".h5ad":
        raise ConfigError(f"--out {out} must end in .h5ad")
    png = out.with_name(out.stem + "_umap.png")
    check_writable(out)  # a read-only or forbidden location fails before the predictions are computed
    if not overwrite:
        for path in (out, *((table_path(out),) if annotations_only else ()), *((png,) if umap else ())):
            if path.exists():
                raise ConfigError(f"output {path} already exists; choose another --out or pass --overwrite")
    setup = dict(
        batch_size=batch_size,
        key_added=key_added,
        chunk_size=chunk_size,
        unknown_quantile=options.pop("unknown_quantile", DEFAULT_QUANTILE),
        source=input,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
    )
    if not is_modern_h5ad(input):
        return _predict_file_in_memory(
            run_dir, input, out, png, piece, annotations_only, umap, setup, options
        )

    from cellformer.data.align import pinned_transform, training_input_options

    model, detector, options, predictor = _setup(run_dir, **setup, **options)
    settings = {**training_input_options(model.config), **options}
    previous_layer = RunInput.of(model.config).prepare.previous_layer
    cells = FileCells(
        input,
        layer=settings.get("layer"),
        gene_key=settings.get("gene_key"),
        extra_layers=(previous_layer,) if previous_layer else (),
        chunk_size=min(chunk_size, 4096),
        layer_origin="given with --layer" if "layer" in options else "the one the model was trained on",
    )
    try:
        values = check_input_values(model, cells, **options)
        options.update(pinned_transform(values))
        start, stop = (0, cells.n_obs) if piece is None else shard_rows(*piece, cells.n_obs)
        outputs = predict_chunks(
            model,
            detector,
            cells.chunk,
            start,
            stop,
            chunk_size=chunk_size,
            batch_size=batch_size,
            predictor=predictor,
            **options,
        )
        if outputs is None:  # another process of a multi-process run: the first one writes
            return {}
        extra = {"input_file": cells.identity(), "run_digest": _run_digest(model.run_dir)}
        if piece is not None:
            extra["shard"] = {"index": piece[0], "count": piece[1], "start": int(start), "stop": int(stop)}
            logger.info("piece %d/%d: cells %d-%d of %d", piece[0], piece[1], start, stop - 1, cells.n_obs)
        annotations = _annotations_adata(cells.obs.index[start:stop])
        annotate(
            annotations,
            model,
            outputs,
            detector,
            key_added=key_added,
            batch_size=batch_size,
            values=values,
            extra_params=extra,
        )
        label_key = annotations.uns[key_added]["params"].get("label_key")
        labels = cells.obs[label_key].iloc[start:stop] if label_key and label_key in cells.obs else None
    finally:
        cells.close()
    written: dict[str, Path] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    if _wants_umap(umap, annotations.n_obs):
        plotted = plot_umap(annotations, png, key_added=key_added, labels=labels)
        if plotted is not None:
            written["umap"] = plotted
    try:
        if annotations_only:
            write_annotations(annotations, out, key_added=key_added, compression=compression)
            written["csv"] = table_path(out)
        else:
            write_annotated_copy(input, annotations, out, key_added=key_added, compression=compression)
    except BaseException:  # disk full, interrupted, ...: no plot of an output that was not written
        if "umap" in written:
            written["umap"].unlink(missing_ok=True)
        raise
    written["h5ad"] = out
    return written


def _annotations_adata(names: Any) -> ad.AnnData:
    import anndata as ad

    from cellformer.data.file_cells import obs_frame

    return ad.AnnData(obs=obs_frame(names))


def _wants_umap(umap: bool | None, n_obs: int) -> bool:
    if umap is None and n_obs > UMAP_MAX_CELLS:
        logger.info(
            "no UMAP: %d cells is more than %d (pass --umap / umap=True to draw it anyway)",
            n_obs,
            UMAP_MAX_CELLS,
        )
        return False
    return umap is not False


def _run_digest(run_dir: str | Path) -> str:
    """What identifies a run's files (its manifest digest; the weights' SHA-256 for a run without one)."""
    from cellformer.integrity import digest, read_manifest, sha256

    manifest = read_manifest(run_dir)
    if manifest is not None:
        return digest(manifest)
    weights = [p for p in sorted(Path(run_dir).iterdir()) if p.suffix in (".safetensors", ".joblib", ".npz")]
    return sha256(weights[0]) if weights else str(Path(run_dir).resolve())


def _predict_file_in_memory(
    run_dir: str | Path,
    input: Path,
    out: Path,
    png: Path,
    piece: tuple[int, int] | None,
    annotations_only: bool,
    umap: bool | None,
    setup: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Path]:
    """An .h5ad in an old layout (anndata < 0.8) cannot be read in chunks: read whole, as anndata does."""
    import anndata as ad

    from cellformer.atomic import atomic_path

    if piece is not None or annotations_only:
        raise InputError(
            f"{input} is in an old .h5ad layout (anndata < 0.8) that cannot be read in pieces; re-save it with "
            "a current anndata (anndata.read_h5ad(path).write_h5ad(new_path)) to use --shard or --annotations-only"
        )
    logger.info("%s is in an old .h5ad layout (anndata < 0.8): read whole", input)
    try:
        adata = ad.read_h5ad(input)
    except OSError as exc:
        raise InputError(
            f"cannot read {input} as an .h5ad file ({exc}); re-save it with anndata's write_h5ad"
        ) from None
    key_added = setup["key_added"]
    setup = {k: v for k, v in setup.items() if k not in ("key_added",)}
    annotated = predict(adata, run_dir, key_added=key_added, **setup, **options)
    if setup["devices"] * setup["num_nodes"] > 1 and not is_primary_process():
        return {}  # the first process writes
    written = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    if _wants_umap(umap, annotated.n_obs):
        plotted = plot_umap(annotated, png, key_added=key_added)
        if plotted is not None:
            written["umap"] = plotted
    try:
        with atomic_path(out) as tmp:
            annotated.write_h5ad(tmp, compression="gzip")
    except BaseException:
        if "umap" in written:
            written["umap"].unlink(missing_ok=True)
        raise
    written["h5ad"] = out
    return written


def plot_umap(
    adata: ad.AnnData,
    path: str | Path,
    *,
    key_added: str = "cellformer",
    seed: int = 0,
    labels: Any = None,
) -> Path | None:
    """UMAP of ``obsm['X_<key>']`` coloured by predicted (and, when present, true) label; adds ``obsm['X_<key>_umap']``.

    Returns the PNG path, or ``None`` when there are too few cells or no embedding.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cellformer.atomic import atomic_path

    embedding = adata.obsm.get(f"X_{key_added}")
    if embedding is None or adata.n_obs < 10:
        logger.warning(
            "no UMAP: %s", "the model has no embedding" if embedding is None else "fewer than 10 cells"
        )
        return None
    import umap

    n_neighbors = int(min(15, adata.n_obs - 1))
    coords = umap.UMAP(n_neighbors=n_neighbors, random_state=seed, n_jobs=1).fit_transform(embedding)
    adata.obsm[f"X_{key_added}_umap"] = coords.astype(np.float32)
    panels = [("predicted", adata.obs[f"{key_added}_prediction"])]
    label_key = adata.uns[key_added]["params"].get("label_key")
    if labels is None and label_key and label_key in adata.obs:
        labels = adata.obs[label_key]
    if labels is not None:
        panels.append((f"true ({label_key})", np.asarray(labels).astype(str)))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels) + 2, 6), squeeze=False)
    unknown = adata.obs[f"{key_added}_unknown"].to_numpy()
    names = [str(c) for c in adata.uns[key_added]["classes"]]  # one colour per label in both panels
    for _, labels in panels[1:]:
        names += sorted(set(np.asarray(labels, dtype=str).tolist()) - set(names))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    colour = {name: cmap(i % cmap.N) for i, name in enumerate(names)}
    for ax, (title, labels) in zip(axes[0], panels, strict=True):
        labels = np.asarray(labels, dtype=str)
        for name in names:
            mask = labels == name
            if mask.any():
                ax.scatter(
                    coords[mask, 0], coords[mask, 1], s=6, color=colour[name], label=name, linewidths=0
                )
        if title == "predicted" and unknown.any():
            ax.scatter(
                coords[unknown, 0],
                coords[unknown, 1],
                s=14,
                facecolors="none",
                edgecolors="black",
                linewidths=0.5,
                label="unknown (flagged)",
            )
        ax.set_title(f"{title} label")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    kind = adata.uns[key_added]["params"]["kind"]
    fig.suptitle(f"{kind} embedding ({adata.n_obs} cells)")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
