"""The masked-gene objective (Geneformer's pretraining task): hide some gene tokens, predict which genes they were.

A share of each training cell's gene tokens is replaced by ``<MASK>`` (their value bins, where tokens
carry values, are kept: they play the part of Geneformer's rank positions), and a small head predicts
each hidden gene from the encoder's state at its position. The head's output layer is the gene
embedding table itself (tied weights, as in BERT and Geneformer), so every gene row receives gradient
from every cell that expresses it, not only through the ``<CLS>`` classifier.

Here it is an auxiliary loss during supervised training (``TrainConfig.masked_gene_weight``); the same
pieces (:class:`GeneMasking`, :class:`MaskedGeneHead`, :func:`masked_gene_loss`) are what pretraining on
unlabelled corpora will use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellformer.tokens import MASK, N_SPECIAL
from cellformer.training.augment import draw_gene_tokens


class GeneMasking:
    """Choose gene tokens (ids ``N_SPECIAL .. n_gene_ids - 1``) to hide, each with probability ``p``.

    The draws depend only on ``(seed, step, rank)``, so a resumed run repeats them; a cell always keeps
    at least one visible gene token (its first).
    """

    def __init__(self, p: float, n_gene_ids: int, seed: int) -> None:
        if not 0 < p < 1:
            raise ValueError(f"masked-gene fraction must be in (0, 1), got {p}")
        self.p = float(p)
        self.n_gene_ids = int(n_gene_ids)
        self.seed = int(seed)

    def __call__(
        self, batch: dict[str, torch.Tensor], step: int, rank: int = 0
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """``(masked batch, hidden (B, T) bool, targets (n_hidden,) gene ids)``; ``batch`` is unchanged."""
        ids = batch["ids"]  # (B, T)
        # padding (and gene-dropped) positions hold <PAD>, so only visible gene tokens can be drawn
        hidden = draw_gene_tokens(ids, self.p, self.n_gene_ids, (self.seed, step, rank, 0x4D))  # (B, T)
        out = dict(batch)
        out["ids"] = ids.masked_fill(hidden, MASK)
        return out, hidden, ids[hidden]


class MaskedGeneHead(nn.Module):
    """Encoder state at a hidden position -> scores over the genes (BERT's transform + tied decoder)."""

    def __init__(self, d_model: int, n_gene_ids: int) -> None:
        super().__init__()
        self.transform = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.bias = nn.Parameter(torch.zeros(n_gene_ids - N_SPECIAL))
        nn.init.normal_(self.transform.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.transform.bias)

    def forward(self, states: torch.Tensor, gene_table: torch.Tensor) -> torch.Tensor:
        """Scores ``(n, n_genes)`` for states ``(n, C)``; ``gene_table`` is the ``(vocab, C)`` embedding."""
        h = self.norm(F.gelu(self.transform(states)))  # (n, C)
        return h @ gene_table[N_SPECIAL:].t() + self.bias  # (n, n_genes)


def masked_gene_loss(
    head: MaskedGeneHead,
    states: torch.Tensor,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    gene_table: torch.Tensor,
) -> torch.Tensor:
    """Mean cross-entropy of the hidden genes; ``states`` ``(B, T, C)``, ``hidden`` ``(B, T)``.

    Zero (with a gradient path) when nothing is hidden, so every DDP process runs the same graph.
    """
    if not bool(hidden.any()):
        return states.sum() * 0.0 + sum(p.sum() for p in head.parameters()) * 0.0
    scores = head(states[hidden], gene_table)  # (n_hidden, n_genes)
    return F.cross_entropy(scores.float(), targets - N_SPECIAL)
