"""prepare -> train -> load -> predict -> evaluate on a synthetic dataset made here, so the core path is
always exercised (the real-data tests skip when their file is absent)."""

from __future__ import annotations

import numpy as np
from shared_helpers import TINY

import cellformer
from cellformer.datasets.synthetic import synthetic_timecourse


def test_train_load_predict_evaluate_on_synthetic_cells(tmp_path):
    adata = synthetic_timecourse(n_times=3, cells_per_time=150, n_genes=200, seed=0)
    adata.obs_names = [f"cell_{i}" for i in range(adata.n_obs)]
    path = tmp_path / "synthetic.h5ad"
    adata.write_h5ad(path)
    cellformer.prepare(path, out=tmp_path / "prepared", label_key="cell_type")
    run = cellformer.train(tmp_path / "prepared", out=tmp_path / "run", **{**TINY, "max_epochs": 3})

    model = cellformer.load(run)
    assert model.kind == "transformer" and len(model.classes) > 1
    annotated = cellformer.predict(adata, run)
    assert annotated is not adata and "cellformer_prediction" not in adata.obs
    proba = annotated.obsm["cellformer_proba"]
    assert proba.shape == (adata.n_obs, len(model.classes))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert set(annotated.obs["cellformer_prediction"].astype(str)) <= set(model.classes)
    again = cellformer.predict(adata, cellformer.load(run).run_dir)  # a reloaded run predicts the same
    np.testing.assert_array_equal(again.obsm["cellformer_proba"], proba)

    metrics = cellformer.evaluate(run, split="test")
    assert metrics["n_cells"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0
