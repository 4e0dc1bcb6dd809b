"""nonzero_medians stays exact when memory is tight: split passes, tiny budgets, heavy ties."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_tokenizers import count_matrices, dense_medians

from cellformer.tokenize.rank import nonzero_medians


@settings(max_examples=60, deadline=None)
@given(
    train=count_matrices(max_cells=60),
    max_collect=st.integers(1, 8),
    pass_bytes=st.sampled_from([1, 64, 10_000]),
    normalize_total=st.booleans(),
)
def test_split_passes_and_small_budgets_give_numpys_median(train, max_collect, pass_bytes, normalize_total):
    X = sp.csr_matrix(train)
    got = nonzero_medians(
        [X[:7], X[7:]], X.shape[1], normalize_total, max_collect=max_collect, pass_bytes=pass_bytes
    )
    if normalize_total:
        expected = dense_medians(train)
    else:
        scaled = train.astype(np.float64) / 1e6
        expected = np.array([np.median(c[c > 0]) if (c > 0).any() else np.nan for c in scaled.T])
    np.testing.assert_array_equal(got, expected)


def test_many_cells_with_ties_and_wide_ranges():
    rng = np.random.default_rng(0)
    n_cells, n_genes = 3000, 6
    dense = np.zeros((n_cells, n_genes))
    dense[:, 0] = 1.0  # the same value everywhere
    dense[:, 1] = rng.integers(1, 4, n_cells)  # few distinct values, many ties
    dense[:, 2] = rng.lognormal(0, 8, n_cells)  # values over many orders of magnitude
    dense[::2, 3] = 5.0  # half the cells, two tied blocks below
    dense[:, 4] = np.where(rng.random(n_cells) < 0.5, 1e-30, 1e30)  # outside the first-pass bins
    X = sp.csr_matrix(dense)
    for max_collect in (1, 3, 4096):
        got = nonzero_medians([X[:1000], X[1000:]], n_genes, normalize_total=False, max_collect=max_collect)
        scaled = dense / 1e6
        expected = [np.median(c[c > 0]) if (c > 0).any() else np.nan for c in scaled.T]
        np.testing.assert_array_equal(got, expected)
