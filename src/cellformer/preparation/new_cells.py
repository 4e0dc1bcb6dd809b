"""New cells tokenized the way a run's prepared data were: AnnData -> aligned matrix -> tokens.

The same job as ``prepare`` (genes aligned to the vocabulary, values checked as at training time, the
saved tokenizer, context tokens, each cell's previous-time-point profile), for cells given to
``predict`` / ``TrainedModel.predict_adata``: it needs only the run directory's copies of the prepared
dataset's ``vocab.json`` and ``tokenizer/`` and its ``config.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cellformer.config import RunInput
from cellformer.errors import InputError, RunDirError

if TYPE_CHECKING:
    import anndata as ad

    from cellformer.tokens import TokenizedCells

logger = logging.getLogger(__name__)

TOKENIZE_CHUNK = 2048  # cells aligned and tokenized at a time


class RunFiles(Protocol):
    """What tokenizing new cells needs of a loaded run (every ``TrainedModel`` has it)."""

    run_dir: Path
    config: dict[str, Any]


def tokenize_adata(
    model: RunFiles, adata: ad.AnnData, *, log: bool = True, progress: bool = True, **options: Any
) -> tuple[TokenizedCells, dict[str, Any]]:
    """Align ``adata`` to a transformer run's vocabulary and tokenize it with the run's saved tokenizer.

    ``log``: log the gene overlap; ``progress``: a progress bar for a large ``adata``."""
    from tqdm.auto import tqdm

    from cellformer.atomic import read_json
    from cellformer.data.align import aligned_matrix, training_input_options
    from cellformer.timecourse.ancestors import ancestor_source
    from cellformer.tokenize.base import get_tokenizer_class
    from cellformer.tokenize.context import ContextVocab, context_value_id
    from cellformer.tokens import N_SPECIAL, TokenizedCells

    run_dir = Path(model.run_dir)
    where = options.get("where", "the input AnnData")
    record = RunInput.of(model.config)
    previous_layer = record.prepare.previous_layer
    if previous_layer and previous_layer not in adata.layers:
        raise InputError(
            f"run {run_dir} was trained with each cell's previous-time-point profile from layer "
            f"'{previous_layer}', which {where} lacks (layers: "
            f"{', '.join(map(str, adata.layers.keys())) or 'none'}); add it with the same genes as X"
        )
    ancestors = ancestor_source(run_dir, adata, record.prepare.time_key)
    for name in ("vocab.json", "tokenizer"):
        if not (run_dir / name).exists():
            raise RunDirError(
                f"run directory {run_dir} has no {name}; it cannot tokenize new cells (train it again)"
            )
    vocab = read_json(run_dir / "vocab.json")
    genes = list(vocab["genes"])
    from cellformer.integrity import require_tokenizer

    get_tokenizer_class(record.tokenizer)  # an unknown name: its own message
    tokenizer = require_tokenizer(run_dir / "tokenizer", record.tokenizer, owner=f"run {run_dir}")
    context = ContextVocab.from_vocab(vocab, N_SPECIAL)  # --batch-key / --context-key tokens, if any
    context_ids = None if context is None else context.encode_obs(adata.obs, where=where)
    settings = {**training_input_options(model.config), **options}
    parts, overlap = [], None
    n = adata.n_obs
    quiet = not progress or n < 4 * TOKENIZE_CHUNK
    with tqdm(total=n, desc="tokenizing", unit="cells", leave=False, disable=quiet) as bar:
        for start in range(0, max(n, 1), TOKENIZE_CHUNK):
            X, overlap = aligned_matrix(adata[start : start + TOKENIZE_CHUNK], genes, **settings)
            previous = None if ancestors is None else ancestors(X, start)
            if previous_layer:  # the same alignment and value checks as the current profile
                previous_settings = {**settings, "layer": previous_layer, "min_overlap": 0.0}
                chunk = adata[start : start + TOKENIZE_CHUNK]
                previous, _ = aligned_matrix(chunk, genes, **previous_settings)
            cells = tokenizer.transform(X, previous)
            if context is not None:
                chunk_ids = context_ids[start : start + TOKENIZE_CHUNK]
                cells = context.insert(cells, chunk_ids, context_value_id(tokenizer))
            parts.append(cells)
            bar.update(X.shape[0])
    if log:
        log_overlap(overlap)
    return TokenizedCells.concatenate(parts), overlap


def cells_without_genes(tokenized: TokenizedCells, vocab_size: int) -> np.ndarray:
    """``True`` for each cell whose own profile has no gene token (only ``<CLS>`` and context tokens).

    Gene tokens are ids ``>= N_SPECIAL`` that are not context tokens; tokens after a ``<SEP>`` (the
    previous-time-point profile) do not count.
    """
    from cellformer.tokens import N_SPECIAL, SEP

    ids = np.asarray(tokenized.ids)
    offsets = np.asarray(tokenized.offsets, dtype=np.int64)
    n = len(offsets) - 1
    cell = np.repeat(np.arange(n), np.diff(offsets))
    is_sep = (ids == SEP).astype(np.int64)
    seps_before = np.cumsum(is_sep) - is_sep
    seps_before -= np.repeat(np.r_[0, np.cumsum(is_sep)][offsets[:-1]], np.diff(offsets))
    current_gene = (ids >= N_SPECIAL) & (ids < vocab_size) & (seps_before == 0)
    return np.bincount(cell[current_gene], minlength=n) == 0


def log_overlap(overlap: dict[str, Any]) -> None:
    """Log how many of the model's genes the input has (a warning below 90%)."""
    logger.info(
        "gene overlap: %d of the model's %d genes present in the input (%.1f%%); input has %d genes",
        overlap["shared"],
        overlap["vocab_genes"],
        100 * overlap["fraction"],
        overlap["file_genes"],
    )
    if overlap["fraction"] < 0.9:
        logger.warning(
            "only %.1f%% of the model's genes are in the input: missing genes count as zero expression, "
            "predictions may be less reliable",
            100 * overlap["fraction"],
        )
