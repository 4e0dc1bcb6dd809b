"""Masked-gene pretraining on unlabelled cells: ``prepare --unlabelled`` and ``train --pretrain-epochs``.

Real data: pbmc68k_reduced (labelled, log-normalized, 765 genes) with 400 cells of pbmc3k_unlabelled
(raw counts, no label column) as the unlabelled cells, as a user would add more cells of the tissue.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from training_helpers import TINY, assert_same_run

import cellformer
from cellformer.config import TrainConfig
from cellformer.errors import ConfigError, InputError
from cellformer.preparation.prepared import PreparedData
from cellformer.training.data import labelled_rows
from cellformer.training.pretrain import pretraining_rows

PREPARE = {"label_key": "bulk_labels", "input_normalized": True, "max_genes": 64}


@pytest.fixture(scope="module")
def unlabelled_h5ad(pbmc3k_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import anndata as ad

    adata = ad.read_h5ad(pbmc3k_path)[:400].copy()
    path = tmp_path_factory.mktemp("unlabelled") / "pbmc3k_400.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def with_unlabelled(pbmc68k_path: Path, unlabelled_h5ad: Path, tmp_path_factory) -> PreparedData:
    out = tmp_path_factory.mktemp("prepared") / "with"
    return cellformer.prepare(pbmc68k_path, out=out, unlabelled=[unlabelled_h5ad], **PREPARE)


def test_unlabelled_cells_get_their_own_split_and_change_nothing_else(
    with_unlabelled: PreparedData, pbmc68k_path: Path, tmp_path: Path
) -> None:
    prepared = with_unlabelled
    alone = cellformer.prepare(pbmc68k_path, out=tmp_path / "alone", **PREPARE)
    unlabelled = prepared.splits["unlabelled"]
    assert len(unlabelled) == 400 and unlabelled.min() == 700  # after every labelled cell
    assert (np.asarray(prepared.labels)[unlabelled] == -1).all()
    for name in ("train", "val", "test"):  # labelled cells: same splits, labels and tokens
        np.testing.assert_array_equal(prepared.splits[name], alone.splits[name])
    np.testing.assert_array_equal(np.asarray(prepared.labels)[:700], np.asarray(alone.labels))
    for row in (0, 350, 699):
        for a, b in zip(prepared.store.cell(row), alone.store.cell(row), strict=True):
            np.testing.assert_array_equal(a, b)
    assert prepared.vocab == alone.vocab
    ids, _ = prepared.store.cell(int(unlabelled[0]))  # pbmc3k cells in pbmc68k's gene vocabulary
    assert len(ids) > 10 and ids.max() < len(prepared.vocab["genes"]) + 4
    assert len(labelled_rows(prepared, "train")) == len(prepared.splits["train"])  # never trained on
    roles = [item["role"] for item in prepared.meta["inputs"]]
    assert roles == ["train", "unlabelled"]
    import pandas as pd

    cells = pd.read_csv(prepared.path / "cells.csv.gz")
    assert (cells["split"] == "unlabelled").sum() == 400 and cells["label"].iloc[700:].isna().all()
    rows = pretraining_rows(prepared)
    assert len(rows) == len(prepared.splits["train"]) + 400


def test_the_input_as_unlabelled_file_is_refused(pbmc68k_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--unlabelled file .* is a labelled input"):
        cellformer.prepare(pbmc68k_path, out=tmp_path / "p", unlabelled=[pbmc68k_path], **PREPARE)
    assert not (tmp_path / "p").exists()


def test_pretraining_lowers_the_masked_gene_loss_is_recorded_and_seeded(
    with_unlabelled: PreparedData, tmp_path: Path
) -> None:
    options = {**TINY, "max_epochs": 1, "pretrain_epochs": 3, "lr": 3e-3}
    run = cellformer.train(with_unlabelled.path, out=tmp_path / "a", **options)
    config = json.loads((run / "config.json").read_text())
    record = config["pretraining"]
    assert record["cells"] == len(with_unlabelled.splits["train"]) + 400 and record["unlabelled_cells"] == 400
    losses = record["masked_gene_loss"]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.1  # the objective is learned
    assert config["train"]["pretrain_epochs"] == 3
    twin = cellformer.train(with_unlabelled.path, out=tmp_path / "b", **options)
    assert_same_run(run, twin)  # seeded: same seed, same run
    plain = cellformer.train(with_unlabelled.path, out=tmp_path / "c", **{**options, "pretrain_epochs": 0})
    assert "pretraining" not in json.loads((plain / "config.json").read_text())
    with pytest.raises(ConfigError, match="pretrain_epochs"):
        TrainConfig(pretrain_epochs=-1)
