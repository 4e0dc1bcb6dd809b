"""Token-set mixup: each training cell takes some gene tokens of another cell, and a mixed label.

Mixup (Zhang et al. 2018) trains on convex combinations of two examples and of their labels. A cell
here is a *set* of gene tokens (no positions), so the combination is one of sets: cell ``i`` keeps each
of its gene tokens with probability ``lam`` (``lam ~ Beta(alpha, alpha)``, one per cell), and its
partner ``j`` (a random other cell of the batch) contributes each of its gene tokens with probability
``1 - lam`` of those genes ``i`` does not carry. The label is the two one-hot labels mixed
in proportion to the gene tokens each cell contributed. Only gene tokens move: ``<CLS>``, ``<SEP>``,
context tokens and the previous-time-point block (after ``<SEP>``) stay ``i``'s, and the partner's
genes come only from its own first block. Lengths stay fixed: the partner fills at most the room left
by ``i``'s dropped tokens, so nothing of ``i``'s is cut. Training steps only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cellformer.tokens import N_SPECIAL, PAD, SEP


class TokenSetMixup:
    """Mix each training cell's gene tokens with a partner's.

    Parameters
    ----------
    alpha
        Beta(alpha, alpha) concentration of each cell's own share ``lam`` (> 0; small values keep most
        cells close to themselves).
    n_gene_ids
        One past the last gene id (the model's ``vocab_size``); ids from it on are context tokens.
    n_classes
        Number of classes (the width of the mixed labels).
    seed
        Training seed: the draws depend only on ``(seed, step, rank)``, so a resumed run repeats them.
    """

    def __init__(self, alpha: float, n_gene_ids: int, n_classes: int, seed: int) -> None:
        if not alpha > 0:
            raise ValueError(f"mixup alpha must be positive, got {alpha}")
        self.alpha = float(alpha)
        self.n_gene_ids = int(n_gene_ids)
        self.n_classes = int(n_classes)
        self.seed = int(seed)

    def __call__(
        self, batch: dict[str, torch.Tensor], step: int, rank: int = 0
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``(mixed batch, targets (B, n_classes))``: a new batch of the same shapes; ``batch`` is unchanged.

        ``targets`` rows are probabilities: cell ``i``'s share of the gene tokens on its own class and
        the partner's share on the partner's.
        """
        ids = batch["ids"]  # (B, T)
        n_cells, length = ids.shape
        if n_cells < 2:  # no partner: the cell as it is, its own label
            return dict(batch), F.one_hot(batch["label"], self.n_classes).float()
        rng = np.random.default_rng([self.seed, step, rank, 0x4D58])
        lam = torch.from_numpy(rng.beta(self.alpha, self.alpha, size=n_cells)).float()  # (B,)
        partner = torch.from_numpy(_derangement(rng, n_cells))  # (B,)
        uniform = torch.from_numpy(rng.random((2, n_cells, length))).float().to(ids.device)  # (2, B, T)
        lam = lam.to(ids.device)
        partner = partner.to(ids.device)

        is_gene = (ids >= N_SPECIAL) & (ids < self.n_gene_ids)  # (B, T)
        first_block = torch.cumsum(ids == SEP, dim=1) == 0  # (B, T): before the first <SEP>
        own_genes = is_gene & first_block  # (B, T): the genes mixup may drop or add
        first_gene = own_genes & (own_genes.cumsum(dim=1) == 1)  # (B, T): always kept
        keep_own = ~own_genes | (uniform[0] < lam[:, None]) | first_gene  # (B, T)
        keep_own &= ids != PAD

        # the partner's first-block genes that i does not carry, drawn with 1 - lam, at most as many as
        # i dropped
        partner_ids = ids[partner]  # (B, T)
        offered = own_genes[partner] & (uniform[1] >= lam[:, None])  # (B, T)
        carried = torch.zeros(n_cells, self.n_gene_ids, dtype=torch.bool, device=ids.device)  # (B, V)
        carried.scatter_(1, ids.masked_fill(~own_genes, PAD).long(), True)
        carried[:, PAD] = False
        offered &= ~carried.gather(1, partner_ids.masked_fill(~offered, PAD).long())
        room = length - keep_own.sum(dim=1, keepdim=True)  # (B, 1)
        offered &= offered.cumsum(dim=1) <= room

        # i's first block, the partner's genes, i's block from <SEP> on; then padding moved to the end
        taken = torch.cat([keep_own & first_block, offered, keep_own & ~first_block], dim=1)  # (B, 3T)
        order = torch.sort((~taken).to(torch.int8), dim=1, stable=True).indices[:, :length]  # (B, T)
        present = taken.gather(1, order)  # (B, T)
        out = dict(batch)
        out["ids"] = torch.cat([ids, partner_ids, ids], dim=1).gather(1, order).masked_fill(~present, PAD)
        out["padding_mask"] = ~present
        if "values" in batch:
            values = batch["values"]
            joined = torch.cat([values, values[partner], values], dim=1)  # (B, 3T)
            out["values"] = joined.gather(1, order).masked_fill(~present, 0)

        own_count = (keep_own & own_genes).sum(dim=1).float()  # (B,)
        partner_count = offered.sum(dim=1).float()  # (B,)
        share = own_count / (own_count + partner_count).clamp(min=1)  # (B,)
        labels = batch["label"]
        targets = torch.zeros(n_cells, self.n_classes, device=ids.device)
        targets[torch.arange(n_cells), labels] += share
        targets[torch.arange(n_cells), labels[partner]] += 1 - share
        return out, targets


def _derangement(rng: np.random.Generator, n: int) -> np.ndarray:
    """A permutation of ``range(n)`` (``n >= 2``) without fixed points (a cyclic shift of a shuffle)."""
    order = rng.permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[order] = np.roll(order, 1)
    return partner
