"""Special tokens and the ragged token container: what every stage after reading shares (a leaf)."""

from __future__ import annotations

import dataclasses

import numpy as np

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
