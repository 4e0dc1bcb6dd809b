"""Context dropout: training cells' context tokens replaced by their covariate's ``<UNK>`` at random.

No training cell carries ``<UNK>`` (its categories are the training values), so without this its
embedding row would never be trained, yet it is what cells of a batch unseen in training get at
predict time. Replacing each context token of each training cell independently with probability ``p``
teaches the model ``<UNK>`` ("covariate unknown"), like word dropout in language models. Only the
batch tensors of training steps change; the token store, validation, evaluation and prediction never.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ContextDropout:
    """Replace context tokens (positions ``1 .. k`` after ``<CLS>``) by ``<UNK>`` with probability ``p``.

    Parameters
    ----------
    starts
        Token id of each covariate's ``<UNK>``, in token order (``ContextVocab.starts``); covariate ``j``
        owns ids ``starts[j] .. ends[j] - 1``.
    ends
        One past each covariate's last token id.
    p
        Probability, in ``(0, 1)``, of replacing each context token of each cell.
    seed
        Training seed: the draws depend only on ``(seed, step, rank)``, so a resumed run repeats them.
    """

    def __init__(self, starts: Sequence[int], ends: Sequence[int], p: float, seed: int) -> None:
        if len(starts) != len(ends) or not starts:
            raise ValueError("context dropout needs one (start, end) id range per covariate")
        if not 0 < p < 1:
            raise ValueError(f"context dropout probability must be in (0, 1), got {p}")
        self.starts = torch.as_tensor(list(starts), dtype=torch.int64)  # (k,)
        self.ends = torch.as_tensor(list(ends), dtype=torch.int64)  # (k,)
        self.p = float(p)
        self.seed = int(seed)

    @classmethod
    def from_vocab(cls, context, p: float, seed: int) -> ContextDropout | None:
        """For a :class:`~cellformer.tokenize.context.ContextVocab`; ``None`` without covariates or ``p == 0``."""
        if context is None or len(context) == 0 or p == 0:
            return None
        starts = [int(s) for s in context.starts]
        ends = [s + len(c.tokens) for s, c in zip(starts, context.covariates, strict=True)]
        return cls(starts, ends, p, seed)

    def __call__(self, ids: torch.Tensor, step: int, rank: int = 0) -> torch.Tensor:
        """A copy of ``ids`` ``(B, T)`` with context tokens dropped to ``<UNK>``; ``ids`` is not modified.

        A slot that does not hold its covariate's token (a cell truncated before it) is left alone.
        """
        k = min(len(self.starts), ids.shape[1] - 1)
        if k <= 0:
            return ids
        generator = torch.Generator().manual_seed(hash((self.seed, step, rank, 0xC0)) % (2**63))
        drop = torch.rand((ids.shape[0], k), generator=generator) < self.p  # (B, k), on the CPU
        starts, ends = self.starts[:k].to(ids.device), self.ends[:k].to(ids.device)
        slots = ids[:, 1 : 1 + k]  # (B, k)
        drop = drop.to(ids.device) & (slots >= starts) & (slots < ends)
        out = ids.clone()
        out[:, 1 : 1 + k] = torch.where(drop, starts.expand_as(slots), slots)
        return out
