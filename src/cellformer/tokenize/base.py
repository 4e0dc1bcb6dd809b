"""The tokenizer interface shared by every tokenizer, and the ragged token container."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

SPECIAL_TOKENS = ("<PAD>", "<CLS>", "<SEP>", "<MASK>")
PAD, CLS, SEP, MASK = range(4)
N_SPECIAL = len(SPECIAL_TOKENS)


@dataclasses.dataclass
class TokenizedCells:
    """Ragged token lists: cell ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray  # int32 (total_tokens,)
    offsets: np.ndarray  # int64 (n_cells + 1,)
    values: np.ndarray | None = None  # int16 (total_tokens,), value ids, or None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def cell(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def to_padded(self, width: int | None = None) -> np.ndarray:
        """Dense ``(n_cells, width)`` id matrix padded with ``<PAD>`` (for tests and small data)."""
        width = int(self.lengths.max(initial=0)) if width is None else width
        out = np.full((len(self), width), PAD, dtype=np.int32)
        for i in range(len(self)):
            row = self.cell(i)[:width]
            out[i, : len(row)] = row
        return out

    @staticmethod
    def concatenate(parts: list[TokenizedCells]) -> TokenizedCells:
        if not parts:
            return TokenizedCells(np.zeros(0, np.int32), np.zeros(1, np.int64))
        ids = np.concatenate([p.ids for p in parts])
        starts = np.cumsum([0] + [p.offsets[-1] for p in parts[:-1]])
        offsets = np.concatenate(
            [[0]] + [p.offsets[1:] + s for p, s in zip(parts, starts, strict=True)]
        ).astype(np.int64)
        values = None if parts[0].values is None else np.concatenate([p.values for p in parts])
        return TokenizedCells(ids, offsets, values)


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer provides; columns of ``X`` are aligned to the vocabulary's genes."""

    name: str
    has_values: bool

    def fit(self, chunks: Iterable[sp.csr_matrix]) -> None:
        """Learn state (medians, HVGs, ...) streaming over the training cells only."""

    def transform(self, X: sp.csr_matrix, previous: sp.csr_matrix | None = None) -> TokenizedCells:
        """Tokenize cells; deterministic and independent of how cells are chunked."""

    def save(self, directory: Path) -> None:
        """Write the fitted state (no pickles)."""

    @classmethod
    def load(cls, directory: Path) -> Tokenizer:
        """Rebuild a fitted tokenizer from ``save``'s files."""


_REGISTRY = {
    "rank": "cellformer.tokenize.rank:RankTokenizer",
    "binned": "cellformer.tokenize.binned:BinnedTokenizer",
    "hybrid": "cellformer.tokenize.binned:HybridTokenizer",
}


def get_tokenizer_class(name: str) -> type:
    """Look a tokenizer class up by its name (``rank``, ``binned``)."""
    from cellformer.errors import ConfigError

    if name not in _REGISTRY:
        raise ConfigError(f"unknown tokenizer {name!r}; choose one of: {', '.join(_REGISTRY)}")
    module, attr = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)
