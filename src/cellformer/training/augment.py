"""Gene-token dropout: each training cell loses a random share of its gene tokens in every step.

A transformer trained from scratch on a few thousand cells memorises them; seeing a different random
subset of each cell's expressed genes every epoch (as if fewer molecules had been captured) is a cheap,
count-free augmentation. Dropped tokens are turned into padding (``<PAD>``, masked from attention), so
shapes stay fixed; ``<CLS>``, ``<SEP>`` and context tokens are never dropped. Only the batch tensors of
training steps change; validation, evaluation and prediction see every token.
"""

from __future__ import annotations

import torch

from cellformer.tokens import N_SPECIAL, PAD


class GeneDropout:
    """Drop each gene token (ids ``N_SPECIAL .. n_gene_ids - 1``) with probability ``p``.

    Parameters
    ----------
    p
        Probability, in ``(0, 1)``, of dropping each gene token of each cell.
    n_gene_ids
        One past the last gene id (the model's ``vocab_size``); ids from it on are context tokens.
    seed
        Training seed: the draws depend only on ``(seed, step, rank)``, so a resumed run repeats them.
    """

    def __init__(self, p: float, n_gene_ids: int, seed: int) -> None:
        if not 0 < p < 1:
            raise ValueError(f"gene dropout probability must be in (0, 1), got {p}")
        self.p = float(p)
        self.n_gene_ids = int(n_gene_ids)
        self.seed = int(seed)

    def __call__(
        self, batch: dict[str, torch.Tensor], step: int, rank: int = 0, view: int = 0
    ) -> dict[str, torch.Tensor]:
        """A copy of ``batch`` with dropped gene tokens set to ``<PAD>`` (and masked); inputs unchanged.

        A cell always keeps at least one gene token (its first), so no cell is left with ``<CLS>`` alone.
        ``view`` numbers independent draws of one step (consistency training uses views 0 and 1).
        """
        ids = batch["ids"]  # (B, T)
        key = (self.seed, step, rank, 0x6E) if view == 0 else (self.seed, step, rank, 0x6E, view)
        drop = draw_gene_tokens(ids, self.p, self.n_gene_ids, key)  # (B, T)
        out = dict(batch)
        out["ids"] = ids.masked_fill(drop, PAD)
        out["padding_mask"] = batch["padding_mask"] | drop
        if "values" in batch:
            out["values"] = batch["values"].masked_fill(drop, 0)
        return out


def draw_gene_tokens(ids: torch.Tensor, p: float, n_gene_ids: int, key: tuple[int, ...]) -> torch.Tensor:
    """``(B, T)`` bool: each gene token (ids ``N_SPECIAL .. n_gene_ids - 1``) drawn with probability ``p``,
    from a generator seeded by ``key`` alone; a cell's first gene token is never drawn."""
    generator = torch.Generator().manual_seed(hash(key) % (2**63))
    draw = (torch.rand(ids.shape, generator=generator) < p).to(ids.device)  # (B, T)
    is_gene = (ids >= N_SPECIAL) & (ids < n_gene_ids)  # (B, T)
    first_gene = is_gene & (is_gene.cumsum(dim=1) == 1)  # (B, T)
    return draw & is_gene & ~first_gene
