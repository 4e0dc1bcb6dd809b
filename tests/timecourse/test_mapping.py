"""The kNN ancestor mapping: correctness against a dense reference, no leakage, round trip, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellformer.errors import InputError, RunDirError
from cellformer.timecourse.mapping import AncestorMapping, time_codes
from cellformer.tokenize.rank import RankTokenizer
from cellformer.tokens import CLS, N_SPECIAL, SEP


def _counts(n_cells: int, n_genes: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.poisson(rng.gamma(0.6, 3.0, (n_cells, n_genes))).astype(np.float32)
    dense[dense.sum(axis=1) == 0, 0] = 1.0  # no empty cells
    return sp.csr_matrix(dense)


def _reference_previous(X_train, t_train, X, t, k, target_sum=1e4):
    """Plain dense reference: all-component PCA of standardized log1p data = standardized space."""

    def norm(M):
        M = np.asarray(M.todense(), dtype=np.float64)
        return M / M.sum(axis=1, keepdims=True)

    P_train, P = norm(X_train), norm(X)
    L_train, L = np.log1p(P_train * target_sum), np.log1p(P * target_sum)
    keep = L_train.mean(axis=0) > 0
    mean, sd = L_train[:, keep].mean(axis=0), L_train[:, keep].std(axis=0, ddof=1)
    sd[sd == 0] = 1
    Z_train, Z = (L_train[:, keep] - mean) / sd, (L[:, keep] - mean) / sd
    points = np.unique(t_train)
    out = np.zeros_like(P)
    for i in range(len(P)):
        earlier = points[points < t[i]]
        if len(earlier) == 0:
            continue
        refs = np.flatnonzero(t_train == earlier[-1])
        dist = ((Z_train[refs] - Z[i]) ** 2).sum(axis=1)
        nearest = refs[np.lexsort((refs, dist))[:k]]
        out[i] = P_train[nearest].mean(axis=0) * target_sum
    return out


def test_full_rank_mapping_equals_dense_knn_reference():
    X = _counts(90, 12, seed=1)
    t = np.repeat([0, 1, 2], 30)
    train = np.arange(90) % 3 != 0
    mapping = AncestorMapping(k=4, n_components=12, n_hvg=None).fit([X[train]], t[train])
    got = mapping.transform(X, t).toarray()
    expected = _reference_previous(X[train], t[train], X, t, k=4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_constructed_example_has_the_obvious_ancestors():
    # time 0: three "A" cells (genes 0-1) and three "B" cells (genes 2-3); time 1: one A-like, one B-like cell
    X_train = sp.csr_matrix(
        np.array(
            [[9, 8, 0, 1], [8, 9, 1, 0], [9, 9, 0, 0], [0, 1, 9, 8], [1, 0, 8, 9], [0, 0, 9, 9]],
            dtype=np.float32,
        )
    )
    X_new = sp.csr_matrix(np.array([[7, 9, 1, 1], [1, 1, 9, 7]], dtype=np.float32))
    X_all = sp.vstack([X_train, X_train[:1]])  # add a later training cell so there are two time points
    mapping = AncestorMapping(k=3, n_components=2, n_hvg=None).fit([X_all], np.r_[np.zeros(6), 1.0])
    index, counts = mapping.neighbours(X_new, [1, 1])
    assert sorted(index[0]) == [0, 1, 2] and sorted(index[1]) == [3, 4, 5]
    np.testing.assert_array_equal(counts, [3, 3])
    previous = mapping.transform(X_new, [1, 1]).toarray()
    fractions = X_train.toarray() / X_train.toarray().sum(axis=1, keepdims=True)
    np.testing.assert_allclose(previous[0], fractions[:3].mean(axis=0) * 1e4, rtol=1e-5)
    np.testing.assert_allclose(previous[1], fractions[3:].mean(axis=0) * 1e4, rtol=1e-5)


def test_earliest_time_point_gets_current_block_and_sep_only():
    X = _counts(40, 30, seed=2)
    t = np.repeat([5.0, 10.0], 20)
    mapping = AncestorMapping(k=3, n_components=5, n_hvg=None).fit([X], t)
    previous = mapping.transform(X, t)
    assert previous[:20].nnz == 0
    np.testing.assert_allclose(np.asarray(previous[20:].sum(axis=1)).ravel(), 1e4, rtol=1e-5)
    tok = RankTokenizer(max_genes=8)
    tok.fit([X])
    cells = tok.transform(X, previous)
    first = cells.cell(0)
    assert first[0] == CLS and first[-1] == SEP and np.sum(first == SEP) == 1
    assert np.all(first[1:-1] >= N_SPECIAL) and len(first) == 2 + 4
    later = cells.cell(25)
    sep = int(np.flatnonzero(later == SEP)[0])
    assert sep == 5 and len(later) == 10  # <CLS> + 4 current + <SEP> + 4 previous


def test_predecessor_skips_time_points_without_training_cells_and_k_is_capped():
    X = _counts(30, 10, seed=3)
    t = np.repeat([0, 1, 2], 10)
    train = t != 1  # no training cell at time 1
    mapping = AncestorMapping(k=50, n_components=3, n_hvg=None).fit([X[train]], t[train])
    index, counts = mapping.neighbours(X, t)
    refs_at_0 = set(range(10))  # training rows 0-9 are the time-0 cells
    for i in range(10, 30):  # time 1 and time 2 cells both map onto time 0
        assert counts[i] == 10 and set(index[i][:10]) == refs_at_0
    assert np.all(counts[:10] == 0)
    # a new cell later than every training time maps onto the latest (time 2)
    index_late, _ = mapping.neighbours(X[:1], [7])
    assert set(index_late[0][:10]) == set(range(10, 20))


def test_no_leakage_other_cells_do_not_change_a_cells_previous_profile():
    X = _counts(120, 40, seed=4)
    t = np.repeat([0, 1, 2, 3], 30)
    train = np.random.default_rng(0).random(120) < 0.6
    held_out = np.flatnonzero(~train)

    def derive(matrix):
        mapping = AncestorMapping(k=5, n_components=6, n_hvg=20).fit([matrix[train]], t[train])
        return mapping, mapping.transform(matrix, t).toarray()

    mapping, before = derive(X)
    # neighbours are training cells only: indices point into the training profiles
    index, counts = mapping.neighbours(X, t)
    assert index.max() < train.sum() and mapping.profiles.shape[0] == train.sum()
    # replace half the held-out cells with unrelated data: nobody else's profile moves
    changed = held_out[::2]
    X_changed = X.tolil()
    X_changed[changed] = _counts(len(changed), 40, seed=99)
    _, after = derive(X_changed.tocsr())
    unchanged = np.setdiff1d(np.arange(120), changed)
    np.testing.assert_array_equal(after[unchanged], before[unchanged])


def test_transform_is_chunk_independent():
    X = _counts(200, 60, seed=5)
    t = np.repeat([0, 1, 2, 3], 50)
    mapping = AncestorMapping(k=7, n_components=8, n_hvg=30, chunk_size=16).fit(
        [X[i : i + 33] for i in range(0, 200, 33)], t
    )
    whole = mapping.transform(X, t)
    pieces = sp.vstack([mapping.transform(X[i : i + 13], t[i : i + 13]) for i in range(0, 200, 13)])
    assert (whole != pieces).nnz == 0


def test_save_load_round_trip_is_identical(tmp_path):
    X = _counts(150, 50, seed=6)
    t = pd.Categorical(
        np.repeat(["early", "mid", "late"], 50), categories=["early", "mid", "late"], ordered=True
    )
    mapping = AncestorMapping(k=5, n_components=6, n_hvg=25).fit([X[:100]], t[:100])
    mapping.save(tmp_path / "previous")
    loaded = AncestorMapping.load(tmp_path / "previous")
    assert loaded.time_order == {"kind": "ordered", "categories": ["early", "mid", "late"]}
    a, b = mapping.transform(X, t), loaded.transform(X, np.asarray(t))  # plain strings map by saved order
    assert (a != b).nnz == 0 and a.dtype == b.dtype == np.float32
    assert all(p.suffix in {".npy", ".bin", ".json"} for p in (tmp_path / "previous").iterdir())
    with pytest.raises(InputError, match="not among the time points"):
        loaded.transform(X[:2], ["early", "never"])
    with pytest.raises(RunDirError, match="no ancestor mapping"):
        AncestorMapping.load(tmp_path / "missing")


def test_time_columns():
    assert time_codes(pd.Series([3, 1, 2]))[0].tolist() == [3.0, 1.0, 2.0]
    assert time_codes(pd.Series(["24", "0"]))[0].tolist() == [24.0, 0.0]  # numbers stored as text
    ordered = pd.Series(pd.Categorical(["b", "a"], categories=["b", "a"], ordered=True))
    assert time_codes(ordered) == (
        pytest.approx(np.array([0.0, 1.0])),
        {"kind": "ordered", "categories": ["b", "a"]},
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (pd.Series([0.0, np.nan, 1.0]), "1 missing value"),
        (pd.Series(["0h", "24h", None]), "1 missing value"),
        (pd.Series(["early", "late"]), "cannot be ordered"),
        (pd.Series(pd.Categorical(["early", "late"])), "cannot be ordered"),
        (pd.Series([True, False]), "boolean"),
    ],
)
def test_bad_time_columns_are_refused(values, message):
    with pytest.raises(InputError, match=message):
        time_codes(values, "Hours")


def test_a_single_time_point_is_refused():
    X = _counts(10, 5, seed=7)
    with pytest.raises(InputError, match="'Hours' has only 1 time point"):
        AncestorMapping(k=2, n_components=2).fit([X], np.full(10, 24), time_key="Hours")


def test_streamed_fit_equals_in_memory_fit_and_loads(tmp_path):
    X = _counts(120, 40, seed=8)
    t = np.repeat([0, 1, 2], 40)
    chunks = [X[i : i + 25] for i in range(0, 120, 25)]
    in_memory = AncestorMapping(k=4, n_components=5, n_hvg=20).fit(chunks, t)
    streamed = AncestorMapping(k=4, n_components=5, n_hvg=20).fit(chunks, t, directory=tmp_path / "m")
    assert isinstance(streamed.profiles.data, np.memmap)
    streamed.save(tmp_path / "m")
    loaded = AncestorMapping.load(tmp_path / "m")
    a = in_memory.transform(X, t)
    assert (a != streamed.transform(X, t)).nnz == 0 and (a != loaded.transform(X, t)).nnz == 0


def test_normalized_input_keeps_the_input_scale():
    X = _counts(60, 20, seed=9) * 3.5  # e.g. FPKM: no per-cell renormalization
    t = np.repeat([0, 1], 30)
    mapping = AncestorMapping(k=30, n_components=3, n_hvg=None, normalize_total=False).fit([X], t)
    previous = mapping.transform(X[30:31], [1]).toarray()[0]
    np.testing.assert_allclose(previous, X[:30].toarray().mean(axis=0), rtol=1e-5)


@pytest.mark.parametrize("n_hvg", [300, 2000])
def test_hvgs_are_scanpys_seurat_flavor_on_the_hsmm_time_course(hsmm_path, n_hvg):
    """The PCA's genes are the one HVG selection: scanpy's seurat flavor on the log-normalized training
    profiles (FPKM here: ``log1p(x)``); the tiny-value guard leaves none of scanpy's genes out."""
    import anndata as ad
    import scanpy as sc

    from cellformer.timecourse.mapping import MIN_LOG_MEAN

    adata = ad.read_h5ad(hsmm_path)
    X = sp.csr_matrix(adata.X, dtype=np.float32)
    mapping = AncestorMapping(n_hvg=n_hvg, normalize_total=False).fit([X], adata.obs["Hours"])
    logged = mapping.profiles.astype(np.float64)
    logged.data = np.log1p(logged.data)
    table = sc.pp.highly_variable_genes(ad.AnnData(logged), flavor="seurat", n_top_genes=n_hvg, inplace=False)
    np.testing.assert_array_equal(mapping.hvg, np.flatnonzero(table["highly_variable"].to_numpy()))
    assert np.asarray(logged.mean(axis=0)).ravel()[mapping.hvg].min() >= MIN_LOG_MEAN


def test_only_genes_with_spread_above_the_tiny_value_guard_are_used():
    dense = _counts(60, 30, seed=10).toarray()
    dense[:, 4] = 0  # never expressed
    dense[:, 9] = 5.0  # no spread
    dense[:, 12] = 0
    dense[0, 12] = 1e-30  # one tiny value (FPKM-like): mean log value far below the guard
    X = sp.csr_matrix(dense)
    t = np.repeat([0, 1], 30)
    everything = AncestorMapping(k=3, n_components=3, n_hvg=None, normalize_total=False).fit([X], t)
    assert not {4, 9, 12} & set(everything.hvg.tolist()) and len(everything.hvg) == 27
    few = AncestorMapping(k=3, n_components=3, n_hvg=27, normalize_total=False).fit([X], t)
    np.testing.assert_array_equal(few.hvg, everything.hvg)  # all usable genes when no more than n_hvg
    top = AncestorMapping(k=3, n_components=3, n_hvg=10, normalize_total=False).fit([X], t)
    assert len(top.hvg) == 10 and set(top.hvg.tolist()) <= set(everything.hvg.tolist())
