"""An in-memory AnnData's expression, aligned to a trained model's genes (for prediction).

The same rules as ``cellformer prepare`` (:mod:`cellformer.data.validate`, :mod:`cellformer.data.view`):
the matrix named by ``layer`` (``None`` = ``X``, ``"raw.X"`` = ``adata.raw.X``), genes named by
``var_names`` or ``var[gene_key]``, values checked and log1p undone when ``input_normalized``, columns
re-indexed onto the model's genes (missing genes are zero, extra genes dropped).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from cellformer.data.read import RAW_LAYER, check_column_indices, supported_dtype
from cellformer.data.validate import ValueSummary, check_gene_names, decide_transform
from cellformer.data.view import align_columns, apply_transform, column_map
from cellformer.data.vocab import gene_overlap
from cellformer.errors import InputError

if TYPE_CHECKING:
    import anndata as ad

log = logging.getLogger(__name__)


def _matrix_and_genes(
    adata: ad.AnnData, layer: str | None, gene_key: str | None, where: str, given: tuple[str, ...] = ()
):
    """The matrix and gene names; ``given`` names the options the user chose (not the training ones)."""
    available = _matrices(adata)
    layer_origin = "given with --layer" if "layer" in given else "the one the model was trained on"
    gene_origin = "given with --gene-key" if "gene_key" in given else "the one the model was trained with"
    if layer is None:
        X, var = adata.X, adata.var
        if X is None:
            raise InputError(
                f"{where} has no X matrix; choose one with --layer (layer= in Python): {', '.join(available)}"
            )
    elif layer == RAW_LAYER:
        if adata.raw is None:
            origin = "given with --layer" if "layer" in given else "the model was trained on raw.X"
            raise InputError(f"{where} has no adata.raw ({origin}); available: {', '.join(available)}")
        X, var = adata.raw.X, adata.raw.var
    else:
        if layer not in adata.layers:
            raise InputError(
                f"layer '{layer}' ({layer_origin}) not found in {where}; available: "
                f"{', '.join(available)}; pass --layer (layer= in Python) to choose another"
            )
        X, var = adata.layers[layer], adata.var
    _check_sparse(X, "X" if layer is None else f"layer '{layer}'", where)
    if gene_key is None:
        genes = np.array([str(g) for g in var.index], dtype=object)
    else:
        if gene_key not in var.columns:
            raise InputError(
                f"gene column '{gene_key}' ({gene_origin}) not found in var of {where}; "
                f"available columns: {', '.join(map(str, var.columns)) or 'none'}; pass --gene-key (gene_key= in "
                "Python) to choose another"
            )
        genes = np.array([str(g) for g in var[gene_key]], dtype=object)
    return X, genes


def _check_sparse(X: Any, matrix: str, where: str) -> None:
    """A CSR / CSC matrix whose stored indices point outside its shape is damaged: one clear error."""
    if sp.issparse(X) and X.format in ("csr", "csc"):
        n = X.shape[1] if X.format == "csr" else X.shape[0]
        check_column_indices(np.asarray(X.indices), n, f"{matrix} of {where}", 0, X.shape[0])


def _matrices(adata: ad.AnnData) -> list[str]:
    return ["X", *map(str, adata.layers.keys())] + ([RAW_LAYER] if adata.raw is not None else [])


def input_values(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    gene_key: str | None = None,
    input_normalized: bool = False,
    input_transform: str = "auto",
    where: str = "the input AnnData",
    chunk_size: int = 4096,
    given: tuple[str, ...] = (),
    **_: Any,
) -> dict[str, Any]:
    """What the whole matrix holds and how :func:`aligned_matrix` turns it into count-like values.

    One pass over the matrix, ``chunk_size`` cells at a time, with ``prepare``'s checks and detection
    (:func:`~cellformer.data.validate.decide_transform`; raises :class:`InputError` on bad values).
    Returns ``matrix``, ``input_normalized``, ``input_transform`` (as asked), ``transform`` (applied:
    ``"expm1"`` or ``"none"``), ``max_value`` and ``integers`` (all values integers). Passing
    :func:`pinned_transform` of it to every chunk's :func:`aligned_matrix` makes them all agree.
    """
    X, _ = _matrix_and_genes(adata, layer, gene_key, where, given)
    matrix_name = "X" if layer is None else f"layer '{layer}'"
    blocks = ((start, X[start : start + chunk_size]) for start in range(0, X.shape[0], chunk_size))
    return values_of_blocks(
        blocks,
        where,
        matrix_name,
        _matrices(adata),
        input_normalized=input_normalized,
        input_transform=input_transform,
    )


def values_of_blocks(
    blocks: Iterable[tuple[int, Any]],
    where: str,
    matrix_name: str,
    matrices: list[str],
    *,
    input_normalized: bool = False,
    input_transform: str = "auto",
) -> dict[str, Any]:
    """:func:`input_values` of a matrix given as ``(first row, rows)`` blocks (an AnnData's or a file's)."""
    summary = ValueSummary(where, matrix_name)
    for start, block in blocks:
        block = block.tocsr() if sp.issparse(block) else sp.csr_matrix(supported_dtype(np.asarray(block)))
        summary.update(np.asarray(block.data), start)
    transform = decide_transform(summary, input_normalized, input_transform, matrices=matrices)
    return {
        "matrix": matrix_name,
        "input_normalized": bool(input_normalized),
        "input_transform": input_transform,
        "transform": transform,
        "max_value": float(summary.max_value),
        "integers": bool(summary.is_counts),
    }


def pinned_transform(values: dict[str, Any]) -> dict[str, Any]:
    """:func:`aligned_matrix` options applying ``values["transform"]`` without detecting it again."""
    if not values["input_normalized"]:
        return {"input_normalized": False, "input_transform": "auto"}
    return {
        "input_normalized": True,
        "input_transform": "log1p" if values["transform"] == "expm1" else "none",
    }


def aligned_matrix(
    adata: ad.AnnData,
    genes: list[str],
    *,
    layer: str | None = None,
    gene_key: str | None = None,
    input_normalized: bool = False,
    input_transform: str = "auto",
    min_overlap: float = 0.5,
    where: str = "the input AnnData",
) -> tuple[sp.csr_matrix, dict[str, Any]]:
    """``(count-like CSR aligned to genes, overlap report)``; raises :class:`InputError` on bad input.

    The overlap report has ``vocab_genes, file_genes, shared, fraction`` (fraction of ``genes`` found).
    Fewer than ``min_overlap`` of the model's genes present is an error.
    """
    X, names = _matrix_and_genes(adata, layer, gene_key, where)
    check_gene_names(names, where, gene_key)
    overlap = gene_overlap(genes, names, path=where, min_overlap=min_overlap)
    X = sp.csr_matrix(supported_dtype(np.asarray(X))) if not sp.issparse(X) else X.tocsr()
    matrix_name = "X" if layer is None else f"layer '{layer}'"
    summary = ValueSummary(where, matrix_name)
    summary.update(np.asarray(X.data), 0)
    transform = decide_transform(summary, input_normalized, input_transform, matrices=_matrices(adata))
    X = apply_transform(X.astype(np.float32) if X.dtype.kind != "f" else X, transform)
    return align_columns(X, column_map(names, list(genes)), len(genes)).astype(np.float32), overlap


def training_input_options(run_config: dict[str, Any]) -> dict[str, Any]:
    """How a run's training data was read (its :class:`~cellformer.preparation.prepared.RunInput`).

    Keys match :func:`aligned_matrix`: ``layer``, ``gene_key``, ``input_normalized``,
    ``input_transform``, ``min_overlap``.
    """
    from cellformer.config import RunInput

    prep = RunInput.of(run_config).prepare
    return {
        "layer": prep.layer,
        "gene_key": prep.gene_key,
        "input_normalized": prep.input_normalized,
        "input_transform": prep.input_transform,
        "min_overlap": prep.min_gene_overlap,
    }
