"""BinnedTokenizer and HybridTokenizer: dense references, scGPT's binning (HVGs: test_hvg.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_tokenizers import (
    as_lists,
    count_matrices,
    dense_binned_row,
    dense_hybrid_row,
    dense_medians,
    dense_value_reference,
    scgpt_binning,
)

from cellformer.config import PrepareConfig
from cellformer.tokenize.base import get_tokenizer_class
from cellformer.tokenize.binned import (
    BinnedTokenizer,
    HybridTokenizer,
    quantile_bins,
)
from cellformer.tokenize.rank import RankTokenizer
from cellformer.tokens import CLS, N_SPECIAL, TokenizedCells

SETTINGS = settings(max_examples=100, deadline=None)
N_BINS = st.sampled_from([2, 3, 4, 7, 51])


@SETTINGS
@given(data=st.data(), X=count_matrices(), n_bins=N_BINS, with_previous=st.booleans())
def test_binned_tokens_equal_dense_reference(data, X, n_bins, with_previous):
    n_genes = X.shape[1]
    hvg = np.flatnonzero(data.draw(st.lists(st.booleans(), min_size=n_genes, max_size=n_genes), "hvg"))
    k = data.draw(st.integers(1, n_genes + 2), "k")
    previous = X[::-1].copy() if with_previous else None
    tokenizer = BinnedTokenizer(n_hvg=max(len(hvg), 1), n_bins=n_bins, max_genes=k, hvg=hvg)
    got = tokenizer.transform(sp.csr_matrix(X), None if previous is None else sp.csr_matrix(previous))
    ids, values = dense_value_reference(
        lambda row, kk: dense_binned_row(row, hvg, n_bins, kk), X, n_bins, k, previous
    )
    assert got.values.dtype == np.int16 and got.ids.dtype == np.int32
    assert as_lists(got) == ids
    assert as_lists(got, values=True) == values


@SETTINGS
@given(data=st.data(), X=count_matrices(), n_bins=N_BINS, scale=st.sampled_from([0.37, 1.5, 1e-3]))
def test_binned_tokens_of_non_integer_values_equal_dense_reference(data, X, n_bins, scale):
    """Non-integer input (de-logged, FPKM) takes the general path, not the one for counts."""
    X = X * np.float32(scale)
    hvg = np.flatnonzero(data.draw(st.lists(st.booleans(), min_size=X.shape[1], max_size=X.shape[1]), "hvg"))
    k = data.draw(st.integers(1, X.shape[1] + 2), "k")
    tokenizer = BinnedTokenizer(n_hvg=max(len(hvg), 1), n_bins=n_bins, max_genes=k, hvg=hvg)
    got = tokenizer.transform(sp.csr_matrix(X))
    ids, values = dense_value_reference(lambda row, kk: dense_binned_row(row, hvg, n_bins, kk), X, n_bins, k)
    assert as_lists(got) == ids
    assert as_lists(got, values=True) == values


@pytest.mark.parametrize("k", [2048, 64])
def test_count_path_equals_general_path_on_real_counts(bladder_counts, monkeypatch, k):
    """Integer counts are binned from each cell's distinct counts; the tokens are the general path's,
    including counts of 256 and more (sorted, not histogrammed); explicit zeros are no tokens."""
    from cellformer.tokenize import binned, kernels

    X = bladder_counts[:400].copy()
    X.data[1::89] += 300  # counts of 300 and more
    X.data[::97] = 0
    X.eliminate_zeros()
    with_zeros = bladder_counts[:400].copy()
    with_zeros.data[1::89] += 300
    with_zeros.data[::97] = 0  # explicit zeros (take the general path, which drops them)
    hvg = np.arange(0, X.shape[1], 5)
    tokenizer = BinnedTokenizer(n_hvg=len(hvg), n_bins=51, max_genes=k, hvg=hvg, n_genes=X.shape[1])
    calls = []
    count_fill = kernels.count_bins.count_fill
    monkeypatch.setattr(kernels.count_bins, "count_fill", lambda *args: calls.append(1) or count_fill(*args))
    counts = tokenizer.transform(X)
    assert len(calls) == 1  # the counts took the count path
    zeros = tokenizer.transform(with_zeros)
    assert len(calls) == 1  # explicit zeros did not
    monkeypatch.setattr(binned, "_count_block", lambda *args: None)
    general = tokenizer.transform(X)
    assert (np.diff(counts.offsets) > 1).all() and counts.values[counts.ids >= 4].max() == 50
    for other in (general, zeros):
        np.testing.assert_array_equal(counts.ids, other.ids)
        np.testing.assert_array_equal(counts.values, other.values)
        np.testing.assert_array_equal(counts.offsets, other.offsets)


@SETTINGS
@given(data=st.data(), X=count_matrices(), n_bins=N_BINS, with_previous=st.booleans())
def test_hybrid_tokens_equal_dense_reference_and_rank_order(data, X, n_bins, with_previous):
    k = data.draw(st.integers(1, X.shape[1] + 2), "k")
    previous = X[::-1].copy() if with_previous else None
    tokenizer = HybridTokenizer(max_genes=k, n_bins=n_bins)
    tokenizer.fit([sp.csr_matrix(X)])
    prev = None if previous is None else sp.csr_matrix(previous)
    got = tokenizer.transform(sp.csr_matrix(X), prev)
    medians = dense_medians(X)
    ids, values = dense_value_reference(
        lambda row, kk: dense_hybrid_row(row, medians, n_bins, kk), X, n_bins, k, previous
    )
    assert as_lists(got) == ids
    assert as_lists(got, values=True) == values
    rank = RankTokenizer(max_genes=k, medians=tokenizer.medians)
    np.testing.assert_array_equal(got.ids, rank.transform(sp.csr_matrix(X), prev).ids)


@SETTINGS
@given(X=count_matrices(), cuts=st.lists(st.integers(0, 25), max_size=4), k=st.integers(1, 8))
def test_binned_and_hybrid_are_independent_of_chunking(X, cuts, k):
    csr = sp.csr_matrix(X)
    bounds = [0, *sorted({min(c, X.shape[0]) for c in cuts}), X.shape[0]]
    chunks = [csr[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    hybrid = HybridTokenizer(max_genes=k)
    hybrid.fit(chunks)
    for tokenizer in (BinnedTokenizer(max_genes=k, hvg=np.arange(0, X.shape[1], 2)), hybrid):
        whole = tokenizer.transform(csr)
        parts = TokenizedCells.concatenate([tokenizer.transform(c) for c in chunks])
        np.testing.assert_array_equal(parts.ids, whole.ids)
        np.testing.assert_array_equal(parts.values, whole.values)
        np.testing.assert_array_equal(parts.offsets, whole.offsets)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), n_bins=N_BINS)
def test_binning_equals_scgpt_whenever_scgpt_is_deterministic(seed, n, n_bins):
    rng = np.random.default_rng(seed)
    row = rng.lognormal(size=n) * (rng.random(n) < 0.7)
    row[rng.integers(n)] = 1.0  # at least one nonzero
    ours = np.zeros(n, dtype=np.int64)
    nonzero = np.flatnonzero(row)
    ours[nonzero] = quantile_bins(np.zeros(len(nonzero), np.int64), row[nonzero], 1, n_bins)
    theirs = scgpt_binning(row, n_bins, rng)
    edges = np.quantile(row[nonzero], np.linspace(0, 1, n_bins - 1))
    left, right = np.digitize(row[nonzero], edges), np.digitize(row[nonzero], edges, right=True)
    certain = left - right <= 1  # a value on at most one edge: scGPT's draw is certain
    np.testing.assert_array_equal(ours[nonzero][certain], theirs[nonzero][certain])
    # on several equal edges scGPT draws from right + 1 .. left; we take the middle
    assert ((ours[nonzero] > right) | (left == right)).all() and (ours[nonzero] <= left).all()
    assert ours[row == 0].max(initial=0) == 0 and (ours[nonzero] >= 1).all() and (ours <= n_bins - 1).all()


def test_tied_values_share_a_bin_and_no_random_generator_is_used():
    row = np.array([5, 1, 1, 1, 1, 1, 1, 1, 2, 2, 9], dtype=np.float64)
    state = np.random.get_state()
    first = quantile_bins(np.zeros(len(row), np.int64), row, 1, 51)
    assert np.random.get_state()[1].tolist() == state[1].tolist()
    np.testing.assert_array_equal(first, quantile_bins(np.zeros(len(row), np.int64), row, 1, 51))
    assert len(set(first[row == 1])) == 1 and len(set(first[row == 2])) == 1
    assert first.min() >= 1 and first.max() == 50
    assert list(np.unique(first)) == sorted(np.unique(first))  # larger value, larger bin
    assert first[row == 9][0] > first[row == 5][0] > first[row == 2][0] > first[row == 1][0]


def _chunks(X: sp.csr_matrix, size: int) -> list[sp.csr_matrix]:
    return [X[i : i + size] for i in range(0, X.shape[0], size)]


def test_from_config_save_load_and_registry(tmp_path, bladder_counts):
    X = bladder_counts[:800]
    assert get_tokenizer_class("binned") is BinnedTokenizer
    assert get_tokenizer_class("hybrid") is HybridTokenizer
    binned = BinnedTokenizer.from_config(PrepareConfig(tokenizer="binned", max_genes=512))
    assert (binned.n_bins, binned.max_genes, binned.flavor) == (51, 512, "seurat_v3")
    assert BinnedTokenizer.from_config(PrepareConfig(input_normalized=True)).flavor == "seurat"
    binned.fit(_chunks(X, 300))
    hybrid = HybridTokenizer.from_config(PrepareConfig(tokenizer="hybrid", max_genes=512))
    hybrid.fit(_chunks(X, 300))
    for tokenizer in (binned, hybrid):
        directory = tmp_path / tokenizer.name
        tokenizer.save(directory)
        assert not list(directory.glob("*.pkl"))
        state = json.loads((directory / "tokenizer.json").read_text())
        assert state["name"] == tokenizer.name and state["value_vocab_size"] == 53
        loaded = type(tokenizer).load(directory)
        before, after = tokenizer.transform(X[:100]), loaded.transform(X[:100])
        np.testing.assert_array_equal(before.ids, after.ids)
        np.testing.assert_array_equal(before.values, after.values)
        assert before.values.max() <= 52 and before.ids[before.offsets[:-1]].tolist() == [1] * 100
        assert (before.lengths <= 513).all()


def test_refuses_unfitted_and_mismatched_input():
    with pytest.raises(RuntimeError):
        BinnedTokenizer().transform(sp.csr_matrix((2, 3)))
    with pytest.raises(ValueError):
        BinnedTokenizer(hvg=np.array([0, 5]), n_genes=6).transform(sp.csr_matrix((2, 3)))
    with pytest.raises(ValueError):
        BinnedTokenizer(n_bins=1)


@settings(max_examples=25, deadline=None)
@given(X=count_matrices(), n_bins=N_BINS, seed=st.integers(0, 2**32 - 1))
def test_quantile_bins_do_not_depend_on_entry_order(X, n_bins, seed):
    from cellformer.tokenize.binned import log_normalized_entries

    rows, _, values = log_normalized_entries(sp.csr_matrix(X))
    expected = quantile_bins(rows, values, X.shape[0], n_bins)
    shuffle = np.random.default_rng(seed).permutation(len(rows))
    np.testing.assert_array_equal(
        quantile_bins(rows[shuffle], values[shuffle], X.shape[0], n_bins), expected[shuffle]
    )


def test_too_few_training_cells_for_seurat_v3_is_an_input_error():
    from cellformer.errors import InputError

    X = sp.csr_matrix(np.random.default_rng(0).poisson(1, (5, 10)).astype(np.float32))
    with pytest.raises(InputError, match="training cells"):
        BinnedTokenizer(n_hvg=3).fit([X])


def test_count_path_with_cell_totals_beyond_float32_precision(monkeypatch):
    """Totals of 2 ** 24 and more are not exact in float32: the count path sums them in float64 like
    the general path (three genes of 2 ** 23 + 1 counts, others small)."""
    from cellformer.tokenize import binned

    rng = np.random.default_rng(0)
    dense = rng.integers(0, 5, (30, 40)).astype(np.float32)
    dense[:, :3] = 2**23 + 1 + np.arange(3)
    X = sp.csr_matrix(dense)
    tokenizer = BinnedTokenizer(n_hvg=40, n_bins=11, max_genes=40, hvg=np.arange(40), n_genes=40)
    counts = tokenizer.transform(X)
    monkeypatch.setattr(binned, "_count_block", lambda *args: None)
    general = tokenizer.transform(X)
    np.testing.assert_array_equal(counts.ids, general.ids)
    np.testing.assert_array_equal(counts.values, general.values)
    ids, values = dense_value_reference(
        lambda row, kk: dense_binned_row(row, np.arange(40), 11, kk), dense, 11, 40
    )
    assert as_lists(counts) == ids and as_lists(counts, values=True) == values


def test_hybrid_ranks_only_the_highly_variable_genes(bladder_counts):
    """With ``n_hvg`` below the file's genes the hybrid tokens are the full ranking with every other gene
    left out (same order, same value bins: bins are still over all of the cell's nonzero genes), and the
    genes kept are the binned tokenizer's seurat_v3 HVGs (one selection)."""
    X, chunks = bladder_counts[:800], _chunks(bladder_counts[:800], 300)
    hybrid = HybridTokenizer(max_genes=96, n_hvg=500)
    hybrid.fit(chunks)
    every = HybridTokenizer(max_genes=X.shape[1], n_hvg=None)
    every.fit(chunks)
    binned = BinnedTokenizer(n_hvg=500)
    binned.fit(chunks)
    kept = np.isfinite(hybrid.medians)
    np.testing.assert_array_equal(np.flatnonzero(kept), binned.hvg)
    np.testing.assert_array_equal(hybrid.medians[kept], every.medians[kept])

    got, full = hybrid.transform(X), every.transform(X)
    is_hvg = np.zeros(X.shape[1] + N_SPECIAL, dtype=bool)
    is_hvg[binned.hvg + N_SPECIAL] = True
    is_hvg[CLS] = True
    n_shorter = 0
    for i in range(X.shape[0]):
        ids = full.ids[full.offsets[i] : full.offsets[i + 1]]
        values = full.values[full.offsets[i] : full.offsets[i + 1]]
        expected = is_hvg[ids]
        want_ids, want_values = ids[expected][:97], values[expected][:97]
        np.testing.assert_array_equal(got.ids[got.offsets[i] : got.offsets[i + 1]], want_ids)
        np.testing.assert_array_equal(got.values[got.offsets[i] : got.offsets[i + 1]], want_values)
        n_shorter += len(want_ids) < min(len(ids), 97)
    assert n_shorter > 0  # the restriction changed some cells' tokens (not only the order of a few)


def test_hybrid_n_hvg_at_or_above_the_genes_ranks_every_gene(bladder_counts, tmp_path):
    X = bladder_counts[:300, :1500]
    all_genes = HybridTokenizer(max_genes=64, n_hvg=1500)
    all_genes.fit([X])
    unrestricted = HybridTokenizer(max_genes=64, n_hvg=None)
    unrestricted.fit([X])
    np.testing.assert_array_equal(all_genes.medians, unrestricted.medians)
    all_genes.save(tmp_path)
    state = json.loads((tmp_path / "tokenizer.json").read_text())
    assert (state["n_hvg"], state["flavor"]) == (1500, "seurat_v3")
    assert HybridTokenizer.from_config(PrepareConfig(input_normalized=True)).flavor == "seurat"
    with pytest.raises(ValueError, match="n_hvg must be positive"):
        HybridTokenizer(n_hvg=0)


def _gene_values(X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from cellformer.tokenize.binned import log_normalized_entries

    return log_normalized_entries(X)


def test_gene_value_edges_are_each_genes_training_quantiles_and_ignore_chunking(bladder_counts):
    """Each tokenable gene's edges are the inverted-CDF quantiles of its nonzero training values to within
    half a grid step (1/256), the same for any chunking; other genes have none."""
    from cellformer.tokenize.binned import _GRID_STEP, gene_value_edges

    X = bladder_counts[:600, :3000]
    genes = np.flatnonzero(X.getnnz(axis=0) > 0)[::3]
    edges = gene_value_edges(_chunks(X, 600), X.shape[1], genes, 11)
    np.testing.assert_array_equal(edges, gene_value_edges(_chunks(X, 97), X.shape[1], genes, 11))
    assert edges.shape == (3000, 10)
    others = np.setdiff1d(np.arange(3000), genes)
    assert np.isnan(edges[others]).all() and not np.isnan(edges[genes]).any()
    _, columns, values = _gene_values(X)
    for gene in genes[:200]:
        exact = np.quantile(values[columns == gene], np.linspace(0, 1, 10), method="inverted_cdf")
        assert np.abs(edges[gene] - exact).max() <= _GRID_STEP / 2 + 1e-12
    assert (np.diff(edges[genes], axis=1) >= 0).all()


def test_gene_bins_equal_a_per_gene_digitize_reference():
    """Bin ids follow the gene's own edges: the middle of the tied-edge range (as the per-cell bins),
    at least 1 (below the lowest edge, or a gene without edges), at most n_bins - 1."""
    from cellformer.tokenize.binned import gene_bins

    rng = np.random.default_rng(0)
    edges = np.sort(rng.uniform(0, 9, (6, 7)), axis=1)
    edges[2, 2:5] = edges[2, 2]  # tied edges
    edges[4] = np.nan  # a gene that never becomes a token
    genes = rng.integers(0, 6, 500)
    values = np.concatenate([rng.uniform(0, 9.5, 480), edges[genes[480:490], 3], np.full(10, edges[2, 2])])
    genes[490:] = 2
    got = gene_bins(genes, np.nan_to_num(values, nan=1.0), edges)
    for gene, value, bin_id in zip(genes, np.nan_to_num(values, nan=1.0), got, strict=True):
        if gene == 4:
            assert bin_id == 1
            continue
        left, right = np.digitize(value, edges[gene]), np.digitize(value, edges[gene], right=True)
        assert bin_id == min(max((left + right + 1) // 2, 1), 7)
    assert got.dtype == np.int16 and set(np.unique(got[genes != 4])) <= set(range(1, 8))


def test_hybrid_gene_wise_bins_compare_a_gene_across_cells(bladder_counts, tmp_path):
    """With ``value_bins="gene"`` the genes and their order are those of the per-cell hybrid; a gene's
    value id rises with its normalized value across cells (not with its place in the cell), and the edges
    survive save / load."""
    X = bladder_counts[:800]
    per_cell = HybridTokenizer(max_genes=64, n_hvg=500)
    per_gene = HybridTokenizer.from_config(PrepareConfig(max_genes=64, n_hvg=500, value_bins="gene"))
    assert per_gene.value_bins == "gene"
    for tokenizer in (per_cell, per_gene):
        tokenizer.fit(_chunks(X, 300))
    a, b = per_cell.transform(X), per_gene.transform(X)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert not np.array_equal(a.values, b.values)
    rows, columns, values = _gene_values(X)
    gene = np.bincount(columns[np.isfinite(per_gene.medians)[columns]]).argmax()
    token_rows = np.repeat(np.arange(X.shape[0]), np.diff(b.offsets))
    in_cells = b.ids == gene + N_SPECIAL
    by_cell = dict(zip(rows[columns == gene], values[columns == gene], strict=True))
    cell_values = np.array([by_cell[row] for row in token_rows[in_cells]])
    order = np.argsort(cell_values, kind="stable")
    assert (np.diff(b.values[in_cells][order]) >= 0).all()  # monotone in the gene's value
    assert len(np.unique(b.values[in_cells])) > 5
    per_gene.save(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["value_bins"] == "gene"
    loaded = HybridTokenizer.load(tmp_path)
    np.testing.assert_array_equal(loaded.value_edges, per_gene.value_edges)
    np.testing.assert_array_equal(loaded.transform(X[:50]).values, per_gene.transform(X[:50]).values)
    with pytest.raises(ValueError, match="value_bins"):
        HybridTokenizer(value_bins="global")
