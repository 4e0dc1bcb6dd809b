"""Property tests: RankTokenizer equals a plain dense reference for random sparse matrices."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_tokenizers import as_lists, count_matrices, dense_medians, dense_rank_reference

from cellformer.tokenize.rank import RankTokenizer, nonzero_medians
from cellformer.tokens import TokenizedCells

SETTINGS = settings(max_examples=100, deadline=None)


def _chunks(X: sp.csr_matrix, cuts: list[int]) -> list[sp.csr_matrix]:
    bounds = [0, *sorted({min(c, X.shape[0]) for c in cuts}), X.shape[0]]
    return [X[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


@SETTINGS
@given(train=count_matrices(), cuts=st.lists(st.integers(0, 25), max_size=4))
def test_medians_equal_numpy_median_over_nonzero_for_any_chunking(train, cuts):
    X = sp.csr_matrix(train)
    expected = dense_medians(train)
    whole = nonzero_medians([X], X.shape[1])
    chunked = nonzero_medians(_chunks(X, cuts), X.shape[1])
    np.testing.assert_array_equal(whole, expected)
    np.testing.assert_array_equal(chunked, whole)


@SETTINGS
@given(data=st.data(), train=count_matrices())
def test_tokens_equal_dense_reference(data, train):
    n_genes = train.shape[1]
    test = data.draw(count_matrices(max_genes=n_genes).filter(lambda m: m.shape[1] <= n_genes), "test")
    test = np.pad(test, ((0, 0), (0, n_genes - test.shape[1])))
    k = data.draw(st.integers(1, n_genes + 3), "k")
    tokenizer = RankTokenizer(max_genes=k)
    tokenizer.fit([sp.csr_matrix(train)])
    got = tokenizer.transform(sp.csr_matrix(test))
    assert got.ids.dtype == np.int32 and got.offsets.dtype == np.int64 and got.values is None
    assert as_lists(got) == dense_rank_reference(test, dense_medians(train), k)


@SETTINGS
@given(data=st.data(), train=count_matrices(min_cells=2))
def test_previous_time_point_tokens_equal_dense_reference(data, train):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    previous = train[rng.permutation(train.shape[0])]
    k = data.draw(st.integers(1, train.shape[1] * 2 + 2), "k")
    tokenizer = RankTokenizer(max_genes=k)
    tokenizer.fit([sp.csr_matrix(train)])
    got = tokenizer.transform(sp.csr_matrix(train), previous=sp.csr_matrix(previous))
    assert as_lists(got) == dense_rank_reference(train, dense_medians(train), k, previous)


@SETTINGS
@given(train=count_matrices(), cuts=st.lists(st.integers(0, 25), max_size=4), k=st.integers(1, 8))
def test_transform_is_independent_of_chunking(train, cuts, k):
    X = sp.csr_matrix(train)
    tokenizer = RankTokenizer(max_genes=k)
    tokenizer.fit([X])
    whole = tokenizer.transform(X)
    parts = TokenizedCells.concatenate([tokenizer.transform(c) for c in _chunks(X, cuts)])
    np.testing.assert_array_equal(parts.ids, whole.ids)
    np.testing.assert_array_equal(parts.offsets, whole.offsets)


def test_duplicate_and_unsorted_csr_entries_count_once():
    dense = np.array([[0, 2, 1, 0], [3, 0, 0, 1], [1, 1, 1, 1]], dtype=np.float32)
    tokenizer = RankTokenizer(max_genes=4)
    tokenizer.fit([sp.csr_matrix(dense)])
    # cell 0 stored as gene 1 = 1 + 1 in two entries, in reverse gene order
    messy = sp.csr_matrix(
        (np.array([1, 1, 1], np.float32), np.array([2, 1, 1]), np.array([0, 3])), shape=(1, 4)
    )
    assert not messy.has_canonical_format
    expected = tokenizer.transform(sp.csr_matrix(dense[:1]))
    np.testing.assert_array_equal(tokenizer.transform(messy).ids, expected.ids)


def test_save_load_round_trip_on_real_data(tmp_path, bladder_counts):
    X = bladder_counts[:600]
    tokenizer = RankTokenizer(max_genes=256)
    tokenizer.fit(_chunks(X, [100, 350]))
    tokenizer.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    loaded = RankTokenizer.load(tmp_path)
    np.testing.assert_array_equal(loaded.medians, tokenizer.medians)
    np.testing.assert_array_equal(loaded.transform(X[:50]).ids, tokenizer.transform(X[:50]).ids)
    # real data against the dense reference on a few cells
    expected = dense_rank_reference(X[:20].toarray(), dense_medians(X.toarray()), 256)
    assert as_lists(tokenizer.transform(X[:20])) == expected
