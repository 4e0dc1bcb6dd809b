"""Training data: length-bucketed, dynamically padded batches of a prepared dataset, sharded for DDP."""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
from torch.utils.data import DataLoader, Sampler

from cellformer.data.dataset import LengthBucketSampler, TokenDataset, collate_tokens
from cellformer.preparation.prepared import PreparedData


class ShardedBatchSampler(Sampler[list[int]]):
    """This process's share of a :class:`LengthBucketSampler`'s batches (``rank::world_size``).

    With ``even`` (training), the batch list is padded by repeating its first batches so every
    process takes the same number of steps, as DDP requires. One process: the batches unchanged.
    """

    def __init__(
        self, batches: LengthBucketSampler, rank: int = 0, world_size: int = 1, even: bool = True
    ) -> None:
        self.batches = batches
        self.sampler = batches  # Lightning calls ``batch_sampler.sampler.set_epoch`` at each epoch start
        self.rank = rank
        self.world_size = world_size
        self.even = even

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def _all(self) -> list[list[int]]:
        batches = list(self.batches)
        if self.even and self.world_size > 1 and batches:
            short = -len(batches) % self.world_size
            batches += batches[:short]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._all()[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.batches)
        if self.even:
            return -(-n // self.world_size)
        return len(range(self.rank, n, self.world_size))


def labelled_rows(prepared: PreparedData, split: str) -> np.ndarray:
    """Rows of ``split`` whose label is one of the training classes (unseen / missing labels dropped)."""
    if split not in prepared.splits:
        return np.zeros(0, np.int64)
    rows = prepared.splits[split]
    labels = np.asarray(prepared.labels)[rows]
    return rows[(labels >= 0) & (labels < prepared.n_classes)]


class CellDataModule(pl.LightningDataModule):
    """Train / validation loaders over a prepared dataset's token store."""

    def __init__(
        self, prepared: PreparedData, *, max_length: int, batch_size: int, seed: int, num_workers: int = 0
    ) -> None:
        super().__init__()
        self.prepared = prepared
        self.max_length = max_length
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.train_rows = labelled_rows(prepared, "train")
        self.val_rows = labelled_rows(prepared, "val")

    def _batches(self, dataset: TokenDataset, shuffle: bool, rank: int, world: int) -> ShardedBatchSampler:
        buckets = LengthBucketSampler(dataset.lengths(), self.batch_size, shuffle=shuffle, seed=self.seed)
        return ShardedBatchSampler(buckets, rank, world, even=shuffle)

    def _loader(self, rows: np.ndarray, shuffle: bool) -> DataLoader:
        dataset = TokenDataset(self.prepared.store, rows, np.asarray(self.prepared.labels), self.max_length)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return DataLoader(
            dataset,
            batch_sampler=self._batches(dataset, shuffle, rank, world),
            collate_fn=collate_tokens,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def steps_per_epoch(self, world_size: int) -> int:
        """Optimizer steps in one training epoch on each of ``world_size`` processes."""
        dataset = TokenDataset(self.prepared.store, self.train_rows, None, self.max_length)
        return len(self._batches(dataset, True, 0, world_size))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_rows, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_rows, shuffle=False)
