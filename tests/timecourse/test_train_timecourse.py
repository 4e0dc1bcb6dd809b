"""The model and training on time-course tokens (``<CLS> current <SEP> previous``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timecourse_helpers import SMALL

from cellformer.config import ModelConfig
from cellformer.errors import InputError
from cellformer.model import CellTransformer
from cellformer.tokens import CLS, N_SPECIAL, SEP


def test_segment_embedding_tells_a_gene_now_from_the_same_gene_before():
    gene = N_SPECIAL + 3
    ids = torch.tensor([[CLS, gene, SEP, gene]])
    for segments, same in ((False, True), (True, False)):
        torch.manual_seed(0)
        config = ModelConfig(
            n_layers=1, d_model=16, n_heads=2, vocab_size=20, n_classes=2, segment_embedding=segments
        )
        model = CellTransformer(config).eval()
        with torch.no_grad():
            states = model.encode(ids)  # (1, 4, 16)
        assert torch.allclose(states[0, 1], states[0, 3]) == same


def test_training_on_derived_previous_profiles(cli, course_adata, course_path, tmp_path):
    import cellformer
    from cellformer.preparation.prepared import PreparedData

    code, err = cli(
        "prepare",
        course_path,
        "--out",
        tmp_path / "p",
        "--label-key",
        "cell_type",
        *SMALL,
        "--time-key",
        "time",
    )
    assert code == 0, err
    prepared = PreparedData(tmp_path / "p")
    run = cellformer.train(
        tmp_path / "p",
        out=tmp_path / "run",
        max_epochs=1,
        n_layers=1,
        d_model=16,
        n_heads=2,
        max_length=int(prepared.meta["max_length"]),
        progress_bar=False,
    )
    model = cellformer.load(run)
    assert model.model_config.segment_embedding is True
    assert (run / "tokenizer" / "previous" / "mapping.json").exists()  # the run directory carries the mapping
    out = model.predict_split(prepared, "test")
    assert out.logits.shape == (len(prepared.split_rows("test")), prepared.n_classes)
    assert np.isfinite(out.logits).all()

    # predict on new cells: the same tokens (hence outputs) as the prepared test split
    import anndata as ad
    import pandas as pd

    from cellformer.prediction import predict
    from cellformer.preparation.new_cells import tokenize_adata

    cells = pd.read_csv(prepared.path / "cells.csv.gz")
    test_rows = prepared.split_rows("test")
    new = course_adata[cells["obs_name"].astype(str).to_numpy()[test_rows]].copy()
    tokens, _ = tokenize_adata(model, new)
    for i, row in enumerate(test_rows):
        np.testing.assert_array_equal(tokens.cell(i), prepared.store.cell(int(row))[0])
    np.testing.assert_allclose(model.predict_tokens(tokens).logits, out.logits, rtol=1e-4, atol=1e-5)
    annotated = predict(new, run)
    assert annotated.obs["cellformer_prediction"].notna().all()
    with pytest.raises(InputError, match="obs\\['time'\\]"):
        tokenize_adata(model, ad.AnnData(X=new.X, var=new.var))  # no time column
