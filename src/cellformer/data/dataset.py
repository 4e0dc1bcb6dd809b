"""PyTorch access to a token store: a map-style Dataset, a padding collate and a length-bucketing sampler."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cellformer.data.store import TokenStore
from cellformer.tokens import PAD


class TokenDataset(Dataset):
    """Cells ``rows`` of a :class:`TokenStore`, read lazily from the memmap.

    Each item is a dict with ``ids`` (int64 tensor), optional ``values`` and ``label`` (-1 when unlabelled).
    ``max_length`` truncates long cells (keeping ``<CLS>`` and the highest-ranked genes).
    """

    def __init__(
        self,
        store: TokenStore,
        rows: Sequence[int] | np.ndarray,
        labels: np.ndarray | None = None,
        max_length: int | None = None,
    ) -> None:
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = labels
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> np.ndarray:
        lengths = self.store.lengths[self.rows]
        return lengths if self.max_length is None else np.minimum(lengths, self.max_length)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[index])
        ids, values = self.store.cell(row)
        if self.max_length is not None:
            ids = ids[: self.max_length]
            values = None if values is None else values[: self.max_length]
        item = {"ids": torch.from_numpy(ids.astype(np.int64))}
        if values is not None:
            item["values"] = torch.from_numpy(values.astype(np.int64))
        label = -1 if self.labels is None else int(self.labels[row])
        item["label"] = torch.tensor(label, dtype=torch.int64)
        item["row"] = torch.tensor(row, dtype=torch.int64)
        return item


def collate_tokens(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad to the longest cell in the batch; ``padding_mask`` is True where a position is ``<PAD>``."""
    width = max(len(item["ids"]) for item in items)
    batch = len(items)
    ids = torch.full((batch, width), PAD, dtype=torch.int64)
    has_values = "values" in items[0]
    values = torch.zeros((batch, width), dtype=torch.int64) if has_values else None
    for i, item in enumerate(items):
        n = len(item["ids"])
        ids[i, :n] = item["ids"]
        if values is not None:
            values[i, :n] = item["values"]
    out = {
        "ids": ids,  # (B, T)
        "padding_mask": ids == PAD,  # (B, T)
        "label": torch.stack([item["label"] for item in items]),
        "row": torch.stack([item["row"] for item in items]),
    }
    if values is not None:
        out["values"] = values
    return out


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of cells with similar lengths, so padding (and compute) follows each cell's gene count.

    Cells are shuffled, cut into pools of ``batch_size * pool_factor``, sorted by length within each
    pool, cut into batches, and the batches shuffled. Deterministic for a given ``seed`` and epoch.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_factor: int = 50,
        drop_last: bool = False,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_factor = pool_factor
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        pool = self.batch_size * self.pool_factor
        batches: list[list[int]] = []
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            for b in range(0, len(chunk), self.batch_size):
                batch = chunk[b : b + self.batch_size]
                if self.drop_last and len(batch) < self.batch_size:
                    continue
                batches.append(batch.tolist())
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
