"""Context tokens: one token per categorical covariate (batch, assay, ...) right after ``<CLS>``.

scGPT adds tokens for experimental context such as batch or modality so the model can tell them apart
from biology. Any tokenizer's output gets them here, after tokenization::

    <CLS> <batch=b2> <assay=10x> gene gene gene ...

Token ids follow the genes: covariate after covariate, each with ``<UNK>`` first and then its training
categories (sorted), so with ``n_genes`` genes the first context token has id ``N_SPECIAL + n_genes``.
The model looks these ids up in their own embedding table (``ModelConfig.n_context`` rows).
Values unseen in the training split (validation / test cells, new data at predict time) get their
covariate's ``<UNK>`` token, with a warning. Tokenizers with values give context tokens the reserved
value id :func:`context_value_id` (one past the tokenizer's own value ids).

The vocabulary lives in ``vocab.json`` under ``"context"``:
``[{"key": "batch", "tokens": ["<UNK>", "b1", "b2"]}, ...]``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cellformer.errors import InputError
from cellformer.text import natural_key
from cellformer.tokens import TokenizedCells

logger = logging.getLogger(__name__)

UNK = "<UNK>"


def context_value_id(tokenizer: Any) -> int | None:
    """The value id of context tokens for ``tokenizer``: one past its own (``None`` without values)."""
    if not getattr(tokenizer, "has_values", False):
        return None
    return int(tokenizer.value_vocab_size)


def covariate_strings(values: Any, *, key: str, where: str, names: Sequence[str] | None = None) -> np.ndarray:
    """A covariate column as an object array of ``str``; missing values or a continuous column fail.

    Integers stored as floats (``3.0``) become ``"3"``. ``names`` (cell names) only improve the message.
    """
    series = pd.Series(values)
    missing = series.isna().to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        cell = f"cell {names[first]!r}" if names is not None else f"position {first}"
        raise InputError(
            f"covariate column '{key}' in {where} has {int(missing.sum())} missing value(s) (e.g. {cell}); "
            f"context tokens need a value for every cell: fill them (e.g. with 'unknown') or drop '{key}'"
        )
    if series.dtype.kind == "f":
        if np.all(series == np.round(series)):
            series = series.astype(np.int64)
        else:
            raise InputError(
                f"covariate column '{key}' in {where} holds non-integer numbers (e.g. {series.iloc[0]!r}); "
                "context tokens are for categorical covariates (batch, assay, ...): pick a categorical column"
            )
    return np.array([str(v) for v in series.tolist()], dtype=object)


@dataclasses.dataclass(frozen=True)
class Covariate:
    """One covariate: its ``obs`` column and the categories seen in training (sorted)."""

    key: str
    categories: tuple[str, ...]

    @property
    def tokens(self) -> tuple[str, ...]:
        return (UNK, *self.categories)


class ContextVocab:
    """The context tokens of a dataset: covariates in order, ids starting at ``first_id``.

    Parameters
    ----------
    covariates
        One :class:`Covariate` per context token of a cell, in token order.
    first_id
        Token id of the first covariate's ``<UNK>`` (``N_SPECIAL + n_genes``).
    """

    def __init__(self, covariates: Sequence[Covariate], first_id: int) -> None:
        self.covariates = list(covariates)
        self.first_id = int(first_id)
        sizes = [len(c.tokens) for c in self.covariates]
        self.starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64) + self.first_id  # <UNK> ids

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.covariates]

    @property
    def n_tokens(self) -> int:
        """Rows of the model's context embedding table (every covariate's tokens, ``<UNK>`` included)."""
        return sum(len(c.tokens) for c in self.covariates)

    def __len__(self) -> int:
        return len(self.covariates)

    @classmethod
    def fit(cls, columns: Mapping[str, np.ndarray], first_id: int) -> ContextVocab:
        """Categories of each covariate from its training-cell values (``str`` arrays), naturally sorted."""
        covariates = [
            Covariate(key, tuple(sorted(set(values.tolist()), key=natural_key)))
            for key, values in columns.items()
        ]
        return cls(covariates, first_id)

    def encode(self, columns: Mapping[str, np.ndarray], *, where: str) -> np.ndarray:
        """Token ids ``(n_cells, n_covariates)`` int32; values outside the categories get ``<UNK>``.

        ``columns`` maps each covariate key to the cells' values as ``str`` (see :func:`covariate_strings`);
        a missing key is an :class:`InputError` naming it. Unseen values are logged as a warning.
        """
        missing = [key for key in self.keys if key not in columns]
        if missing:
            raise InputError(
                f"covariate column(s) {', '.join(repr(k) for k in missing)} not found in obs of {where}; the model "
                f"was trained with context tokens for {', '.join(self.keys)}: add the column(s)"
            )
        n_cells = len(columns[self.keys[0]]) if self.covariates else 0
        out = np.empty((n_cells, len(self.covariates)), dtype=np.int32)
        for j, (covariate, start) in enumerate(zip(self.covariates, self.starts, strict=True)):
            values = pd.Index(np.asarray(columns[covariate.key], dtype=object))
            position = pd.Index(covariate.categories, dtype=object).get_indexer(values)  # -1 when unseen
            out[:, j] = start + 1 + position  # -1 -> <UNK> at start
            unseen = position < 0
            if unseen.any():
                names = sorted(set(values[unseen].tolist()), key=natural_key)
                logger.warning(
                    "%d cell(s) of %s have '%s' values not seen in training (%s): they get the %s context token",
                    int(unseen.sum()),
                    where,
                    covariate.key,
                    ", ".join(names[:5]) + (", ..." if len(names) > 5 else ""),
                    UNK,
                )
        return out

    def encode_obs(self, obs: pd.DataFrame, *, where: str) -> np.ndarray:
        """:meth:`encode` for the cells of an AnnData's ``obs`` (new data at predict time).

        A missing covariate column or a missing value in one is an :class:`InputError` naming it.
        """
        missing = [key for key in self.keys if key not in obs.columns]
        if missing:
            raise InputError(
                f"covariate column(s) {', '.join(repr(k) for k in missing)} not found in obs of {where}; the "
                f"model was trained with context tokens for {', '.join(self.keys)}: add the column(s) "
                f"(available: {', '.join(map(str, obs.columns)) or 'none'})"
            )
        names = [str(name) for name in obs.index]
        columns = {key: covariate_strings(obs[key], key=key, where=where, names=names) for key in self.keys}
        return self.encode(columns, where=where)

    def insert(
        self, cells: TokenizedCells, context_ids: np.ndarray, value_id: int | None = None
    ) -> TokenizedCells:
        """``cells`` with each cell's context tokens inserted right after its first token (``<CLS>``).

        ``context_ids`` is :meth:`encode`'s output for these cells; ``value_id`` is the value of the
        context tokens when ``cells`` has values (:func:`context_value_id`).
        """
        n_cells, k = len(cells), context_ids.shape[1] if context_ids.ndim == 2 else 0
        if context_ids.shape[0] != n_cells:
            raise ValueError(f"{context_ids.shape[0]} rows of context ids for {n_cells} cells")
        if k == 0:
            return cells
        if np.any(cells.lengths < 1):
            raise ValueError("every cell needs a <CLS> token before its context tokens")
        offsets = cells.offsets + k * np.arange(n_cells + 1, dtype=np.int64)
        total = int(offsets[-1])
        # new position of every old token: shifted by k, except each cell's first token
        shift = np.repeat(k * np.arange(n_cells, dtype=np.int64), cells.lengths)
        not_first = np.ones(len(cells.ids), dtype=bool)
        not_first[cells.offsets[:-1]] = False
        shift[not_first] += k
        ids = np.empty(total, dtype=cells.ids.dtype)
        ids[np.arange(len(cells.ids)) + shift] = cells.ids
        slots = (offsets[:-1, None] + 1 + np.arange(k)[None, :]).ravel()  # (n_cells * k,)
        ids[slots] = context_ids.ravel()
        values = None
        if cells.values is not None:
            if value_id is None:
                raise ValueError("cells have values: give the context tokens' value_id")
            values = np.empty(total, dtype=cells.values.dtype)
            values[np.arange(len(cells.values)) + shift] = cells.values
            values[slots] = value_id
        return TokenizedCells(ids=ids, offsets=offsets, values=values)

    def to_json(self) -> list[dict[str, Any]]:
        """The ``vocab.json`` ``"context"`` entry."""
        return [{"key": c.key, "tokens": list(c.tokens)} for c in self.covariates]

    @classmethod
    def from_vocab(cls, vocab: Mapping[str, Any], n_special: int) -> ContextVocab | None:
        """From a parsed ``vocab.json``; ``None`` when it has no context tokens."""
        entries = vocab.get("context") or []
        if not entries:
            return None
        covariates = []
        for entry in entries:
            tokens = list(entry["tokens"])
            if not tokens or tokens[0] != UNK:
                raise InputError(f"vocab.json context entry {entry.get('key')!r} must start with {UNK}")
            covariates.append(Covariate(str(entry["key"]), tuple(tokens[1:])))
        return cls(covariates, n_special + len(vocab["genes"]))
