"""Labels that are surely a mistake: missing-value texts, a continuous column, a test file named otherwise."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from faults_helpers import PREPARE, error_line

from cellformer.errors import InputError


@pytest.fixture(scope="module")
def labelled(small_h5ad, tmp_path_factory):
    """small.h5ad with a label column holding '', 'nan', 'None' and NaN, and n_counts (continuous)."""
    import anndata as ad

    adata = ad.read_h5ad(small_h5ad)
    labels = adata.obs["cell_type"].astype(object).to_numpy().copy()
    labels[:10], labels[10:20], labels[20:25], labels[25:28] = "", "nan", "None", np.nan
    adata.obs["messy"] = labels
    adata.obs["n_counts"] = np.asarray(adata.X.sum(axis=1)).ravel().astype(np.float64)
    path = tmp_path_factory.mktemp("labels") / "labelled.h5ad"
    adata.write_h5ad(path)
    return path


def test_missing_label_texts_are_dropped_and_counted_once(labelled, tmp_path, caplog):
    from cellformer.preparation.prepare import prepare

    with caplog.at_level(logging.INFO, logger="cellformer"):
        prepared = prepare(labelled, out=tmp_path / "prep", label_key="messy", **PREPARE)
    classes = json.loads((prepared.path / "classes.json").read_text())["classes"]
    assert not {"", "nan", "None"} & set(classes), classes
    assert prepared.meta["n_cells"] == 420 - 28
    lines = [r.getMessage() for r in caplog.records if "without a label" in r.getMessage()]
    assert len(lines) == 1 and "28 cell(s)" in lines[0], lines
    assert "10 ''" in lines[0] and "10 'nan'" in lines[0] and "5 'None'" in lines[0] and "3 NaN" in lines[0]


def test_a_continuous_label_column_is_refused_unless_forced(cli, labelled, tmp_path, caplog):
    line = error_line(
        *cli("prepare", labelled, "--out", tmp_path / "p", "--label-key", "n_counts", "--min-genes", 10)
    )
    assert "'n_counts'" in line and "--label-key" in line and "--allow-many-classes" in line, line
    assert not (tmp_path / "p").exists()

    from cellformer.preparation.prepare import prepare

    with caplog.at_level(logging.WARNING, logger="cellformer"):
        prepared = prepare(
            labelled, out=tmp_path / "forced", label_key="n_counts", allow_many_classes=True, **PREPARE
        )
    assert prepared.n_classes > 50
    small_class_lines = [r for r in caplog.records if "too few" in r.getMessage()]
    assert len(small_class_lines) == 1  # one line for all classes too small to stratify, not one each


def test_a_test_file_whose_labels_are_all_unseen_is_refused(small_h5ad, other_cells, tmp_path):
    from cellformer.preparation.prepare import prepare

    test = other_cells.copy()
    test.obs["cell_type"] = test.obs["cell_type"].astype(str).str.replace("class_", "", regex=False)
    path = tmp_path / "renamed.h5ad"
    test.write_h5ad(path)
    with pytest.raises(InputError) as caught:
        prepare(small_h5ad, out=tmp_path / "prep", test=path, **PREPARE)
    message = str(caught.value)
    assert "'1', '2', '3'" in message and "'class_1', 'class_2'" in message and "in all" in message, message
    assert not (tmp_path / "prep").exists()
