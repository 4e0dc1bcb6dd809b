"""Predicting with a run trained on previous-time-point profiles from a layer (``--previous-layer``)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import cellformer
from cellformer.errors import InputError
from cellformer.preparation.new_cells import tokenize_adata
from cellformer.tokens import SEP


@pytest.fixture(scope="module")
def with_previous(bladder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> ad.AnnData:
    """600 bladder cells whose 'previous profile' layer is another cell's counts."""
    adata = ad.read_h5ad(bladder_path)
    adata = adata[np.sort(np.random.default_rng(0).permutation(adata.n_obs)[:600])].copy()
    adata.layers["X_previous"] = adata.X[np.random.default_rng(1).permutation(adata.n_obs)]
    return adata


def test_predict_builds_the_same_tokens_as_prepare(with_previous, tmp_path):
    source = tmp_path / "course.h5ad"
    with_previous.write_h5ad(source)
    prepared = cellformer.prepare(
        source, out=tmp_path / "prepared", previous_layer="X_previous", max_genes=32
    )
    run = cellformer.train(
        prepared.path, out=tmp_path / "run", max_epochs=1, n_layers=1, d_model=16, n_heads=2,
        max_length=int(prepared.meta["max_length"]), progress_bar=False,
    )  # fmt: skip
    model = cellformer.load(run)
    cells = pd.read_csv(prepared.path / "cells.csv.gz")
    test_rows = prepared.split_rows("test")
    new = with_previous[cells["obs_name"].astype(str).to_numpy()[test_rows]].copy()

    tokens, _ = tokenize_adata(model, new)
    for i, row in enumerate(test_rows):
        np.testing.assert_array_equal(tokens.cell(i), prepared.store.cell(int(row))[0])
    assert all((tokens.cell(i) == SEP).sum() == 1 for i in range(len(tokens)))
    expected = model.predict_split(prepared, "test").logits
    np.testing.assert_allclose(model.predict_tokens(tokens).logits, expected, rtol=1e-4, atol=1e-5)

    annotated = cellformer.predict(new, run)
    assert annotated.obs["cellformer_prediction"].notna().all()
    del new.layers["X_previous"]
    with pytest.raises(InputError, match="layer 'X_previous'.*lacks"):
        cellformer.predict(new, run)
