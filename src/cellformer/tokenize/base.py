"""The tokenizer interface shared by every tokenizer, and the registry of tokenizers by name."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import scipy.sparse as sp

# re-exported for the modules that still import them from here (model/transformer.py,
# training/augment.py, training/embedding_init.py; owned by other work); new code imports cellformer.tokens
from cellformer.tokens import CLS, MASK, N_SPECIAL, PAD, SEP, SPECIAL_TOKENS, TokenizedCells  # noqa: F401


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
