"""The gene vocabulary: special tokens, then genes (gene ``j`` has token id ``N_SPECIAL + j``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cellformer.atomic import write_json
from cellformer.errors import InputError
from cellformer.tokens import SPECIAL_TOKENS


def write_vocab(path: str | Path, genes: list[str], context: list[dict[str, Any]] | None = None) -> None:
    """``vocab.json``: special tokens, genes, and the context tokens (``ContextVocab.to_json``) if any."""
    vocab: dict[str, Any] = {"special": list(SPECIAL_TOKENS), "genes": list(genes)}
    if context:
        vocab["context"] = context
    write_json(path, vocab)


def gene_overlap(
    vocab_genes: list[str], file_genes: np.ndarray, *, path: Path, min_overlap: float
) -> dict[str, Any]:
    """How many vocabulary genes a file has; below ``min_overlap`` (a fraction of the vocabulary) fails."""
    present = set(file_genes.tolist())
    shared = sum(1 for g in vocab_genes if g in present)
    fraction = shared / len(vocab_genes) if vocab_genes else 0.0
    report = {
        "vocab_genes": len(vocab_genes),
        "file_genes": int(len(file_genes)),
        "shared": shared,
        "fraction": fraction,
    }
    if shared == 0 or fraction < min_overlap:
        examples = ", ".join(list(map(str, file_genes[:3])))
        raise InputError(
            f"{path} shares only {shared} of the {len(vocab_genes)} training genes ({fraction:.1%}, the minimum is "
            f"{min_overlap:.0%}); are the gene identifiers of the same kind (e.g. {examples}, training: "
            f"{', '.join(vocab_genes[:3])})? Use --gene-key to pick a matching var column, or lower --min-gene-overlap"
        )
    return report
