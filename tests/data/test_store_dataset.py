"""The memory-mapped token store, the torch Dataset over it, the padding collate and the length buckets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellformer.data.dataset import LengthBucketSampler, TokenDataset, collate_tokens
from cellformer.data.store import TokenStore, TokenStoreWriter
from cellformer.errors import RunDirError
from cellformer.tokens import PAD, TokenizedCells


def _cells(lengths: list[int], seed: int, values: bool) -> TokenizedCells:
    rng = np.random.default_rng(seed)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    ids = rng.integers(4, 500, offsets[-1]).astype(np.int32)
    ids[offsets[:-1]] = 1  # <CLS> first
    return TokenizedCells(ids, offsets, rng.integers(1, 50, offsets[-1]).astype(np.int16) if values else None)


@pytest.mark.parametrize("values", [False, True])
def test_store_round_trips_chunks_through_memmaps(tmp_path, values):
    chunks = [_cells([3, 1, 7], 0, values), _cells([5], 1, values), _cells([2, 9], 2, values)]
    writer = TokenStoreWriter(tmp_path, has_values=values)
    for chunk in chunks:
        writer.append(chunk)
    lengths = writer.close()
    expected = TokenizedCells.concatenate(chunks)

    store = TokenStore(tmp_path)
    assert isinstance(store.ids, np.memmap)  # nothing is loaded up front
    assert len(store) == 6 and store.has_values == values
    np.testing.assert_array_equal(lengths, [3, 1, 7, 5, 2, 9])
    np.testing.assert_array_equal(store.lengths, lengths)
    for i in range(len(store)):
        ids, cell_values = store.cell(i)
        np.testing.assert_array_equal(ids, expected.cell(i))
        if values:
            np.testing.assert_array_equal(
                cell_values, expected.values[expected.offsets[i] : expected.offsets[i + 1]]
            )
    subset = store.subset(np.array([4, 0]))
    np.testing.assert_array_equal(subset.cell(0), expected.cell(4))
    np.testing.assert_array_equal(subset.cell(1), expected.cell(0))


def test_truncated_store_is_refused(tmp_path):
    writer = TokenStoreWriter(tmp_path, has_values=False)
    writer.append(_cells([4, 4], 0, False))
    writer.close()
    ids = tmp_path / "tokens" / "ids.bin"
    ids.write_bytes(ids.read_bytes()[:-4])
    with pytest.raises(RunDirError, match="truncated"):
        TokenStore(tmp_path)


def test_dataset_and_collate_pad_to_the_longest_cell_in_the_batch(tmp_path):
    writer = TokenStoreWriter(tmp_path, has_values=True)
    writer.append(_cells([3, 6, 2, 4], 3, True))
    writer.close()
    store = TokenStore(tmp_path)
    labels = np.array([2, 0, 1, 1])
    dataset = TokenDataset(store, rows=[3, 0, 2], labels=labels, max_length=5)
    assert len(dataset) == 3
    np.testing.assert_array_equal(dataset.lengths(), [4, 3, 2])

    batch = collate_tokens([dataset[1], dataset[2]])  # lengths 3 and 2: padded to 3, not to max_length
    assert batch["ids"].shape == (2, 3)
    np.testing.assert_array_equal(batch["ids"][0].numpy(), store.cell(0)[0])
    np.testing.assert_array_equal(batch["ids"][1, :2].numpy(), store.cell(2)[0])
    assert batch["ids"][1, 2] == PAD and batch["values"][1, 2] == 0
    assert batch["padding_mask"].tolist() == [[False, False, False], [False, False, True]]
    assert batch["label"].tolist() == [2, 1] and batch["row"].tolist() == [0, 2]
    truncated = TokenDataset(store, rows=[1], max_length=5)[0]  # 6 tokens, top 5 kept, label unknown
    np.testing.assert_array_equal(truncated["ids"].numpy(), store.cell(1)[0][:5])
    assert truncated["label"] == -1 and truncated["ids"].dtype == torch.int64


def test_length_buckets_cover_every_cell_once_and_group_similar_lengths():
    lengths = np.random.default_rng(0).integers(2, 2000, 1000)
    sampler = LengthBucketSampler(lengths, batch_size=16, seed=3, pool_factor=10)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_batches = np.array_split(np.random.default_rng(1).permutation(1000), 63)
    padded_random = sum(len(b) * lengths[b].max() for b in random_batches)
    assert padded < 0.7 * padded_random  # compute follows the cells' own lengths
    assert batches == list(LengthBucketSampler(lengths, batch_size=16, seed=3, pool_factor=10))
    sampler.set_epoch(1)
    assert list(sampler) != batches
