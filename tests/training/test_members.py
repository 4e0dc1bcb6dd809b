"""An ensemble of transformers trained side by side (``--members``): seeded, saved, loaded, predicted.
Real data: the bladder cells prepared by the session fixture."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from training_helpers import TINY, assert_same_run

import cellformer
from cellformer.errors import ConfigError
from cellformer.model import TransformerEnsemble


def test_members_train_seeded_and_predict_as_one_model(
    bladder_prepared: Path, bladder_path, tmp_path: Path
) -> None:
    options = {**TINY, "max_epochs": 2, "members": 2}
    run = cellformer.train(bladder_prepared, out=tmp_path / "a", **options)
    model = cellformer.load(run)
    assert isinstance(model.model, TransformerEnsemble) and model.config["model"]["members"] == 2
    tables = [table.weight.detach() for table in model.model.gene_tables()]
    assert not np.array_equal(tables[0].numpy(), tables[1].numpy())  # each member trained its own table
    twin = cellformer.train(bladder_prepared, out=tmp_path / "b", **options)
    assert_same_run(run, twin)  # seeded: same seed, same run
    cells = ad.read_h5ad(bladder_path)[:300].copy()
    annotated = cellformer.predict(cells, run)
    assert annotated.obsm["X_cellformer"].shape == (300, 2 * TINY["d_model"])
    proba = annotated.obsm["cellformer_proba"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (
        annotated.obs["cellformer_prediction"].to_numpy() == np.asarray(model.classes)[proba.argmax(1)]
    ).all()


@pytest.mark.parametrize("option", ["masked_gene_weight", "consistency_weight"])
def test_members_refuse_the_auxiliary_losses(bladder_prepared: Path, tmp_path: Path, option: str) -> None:
    with pytest.raises(ConfigError, match="members"):
        cellformer.train(bladder_prepared, out=tmp_path / option, **{**TINY, "members": 2, option: 1.0})
