"""Training cells never pass for test cells: --test overlap refused, duplicates reported, runs tied to
the prepared data they were trained on."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from integrity_helpers import PREPARE, error_line, rerecord

import cellformer
from cellformer.errors import InputError, RunDirError
from cellformer.preparation.prepare import prepare


@pytest.fixture(scope="module")
def pbmc(pbmc68k_path: Path):
    import anndata as ad

    return ad.read_h5ad(pbmc68k_path)


def _write(adata, path: Path) -> Path:
    adata.write_h5ad(path)
    return path


def test_row_hashes_identify_rows_by_content():
    from cellformer.data.leakage import row_hashes

    X = sp.csr_matrix(np.array([[0, 1.5, 0, 2], [0, 1.5, 0, 2], [0, 2, 0, 1.5], [0, 0, 0, 0], [0, 0, 0, 0]]))
    h = row_hashes(X)
    assert h[0] == h[1] and h[3] == h[4] and len({h[0], h[2], h[3]}) == 3
    assert row_hashes(X.astype(np.float64))[0] == h[0]  # the value, not its storage type
    assert row_hashes(sp.csr_matrix(X.toarray()[:, [1, 0, 2, 3]]))[0] != h[0]  # which gene matters


def test_test_file_equal_to_the_input_is_refused(pbmc68k_path, cli, tmp_path):
    line = error_line(
        *cli("prepare", pbmc68k_path, "--test", pbmc68k_path, "--out", tmp_path / "p", "--input-normalized")
    )
    assert "is the training input" in line and "omit --test" in line
    assert not (tmp_path / "p").exists()


def test_test_cells_that_are_training_cells_are_refused(pbmc, tmp_path):
    train = _write(pbmc[:500].copy(), tmp_path / "train.h5ad")
    test = _write(pbmc[450:].copy(), tmp_path / "test.h5ad")  # 50 of its 250 cells are training cells
    with pytest.raises(InputError, match=r"50 of the 250 cells of the --test file .* exactly the expression"):
        prepare(train, test=test, out=tmp_path / "p", **PREPARE)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("genes", [slice(None), slice(0, 400)])
def test_training_cells_under_other_names_are_refused(pbmc, tmp_path, genes):
    """Renamed, and with only some of the genes: still the same cells (compared over the shared genes)."""
    train = _write(pbmc[:500].copy(), tmp_path / "train.h5ad")
    other = pbmc[480:, genes].copy()
    other.obs_names = [f"renamed_{i}" for i in range(other.n_obs)]  # 20 training cells, other names
    test = _write(other, tmp_path / "test.h5ad")
    with pytest.raises(InputError, match=r"20 of the 220 cells of the --test file .* exactly the expression"):
        prepare(train, test=test, out=tmp_path / "p", **PREPARE)
    assert not list(tmp_path.glob(".p.tmp-*")) and not (tmp_path / "p").exists()


def test_other_cells_that_share_names_are_reported(pbmc, tmp_path, caplog):
    """Default names ('0', '1', ...) and barcodes recur across files: a shared name alone is reported."""
    train = _write(pbmc[:500].copy(), tmp_path / "train.h5ad")
    other = pbmc[500:].copy()
    other.obs_names = list(pbmc.obs_names[:200])
    test = _write(other, tmp_path / "test.h5ad")
    with caplog.at_level(logging.WARNING):
        data = prepare(train, test=test, out=tmp_path / "p", **PREPARE)
    assert data.meta["leakage"]["same_names"] == 200 and data.meta["leakage"]["same_content"] == 0
    assert "200 of the 200 cells of the --test file" in caplog.text and "other expression" in caplog.text


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_duplicates_inside_a_file_are_reported(pbmc, tmp_path, caplog):
    import anndata as ad

    copies = pbmc[:60].copy()
    copies.obs_names = [f"copy_{i}" for i in range(60)]
    named = pbmc[60:70].copy()  # other cells under names already used
    named.obs_names = list(pbmc.obs_names[100:110])
    path = _write(ad.concat([pbmc, copies, named]), tmp_path / "dups.h5ad")
    with caplog.at_level(logging.WARNING):
        data = prepare(path, out=tmp_path / "p", **PREPARE)
    report = data.meta["leakage"]["files"]["dups.h5ad"]
    assert report["duplicate_names"] == 10 and report["duplicate_cells"] == 70
    assert report["eval_cells_copied_in_train"] > 0
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "70 cells are exact copies" in warned and "10 of its 770 kept cells repeat" in warned
    assert f"{report['eval_cells_copied_in_train']} validation/test cells have a copy" in warned
    hashes = np.load(data.path / "cell_hashes.npy")
    assert len(hashes) == 770 and hashes[0] == hashes[700]
    # evaluation says how many of the cells it scores are copies of training cells
    run = cellformer.baseline(data.path, method="logreg", out=tmp_path / "lr")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        metrics = cellformer.evaluate(run, split="test")
    assert metrics["data"]["copies_of_training_cells"] > 0
    assert (
        f"{metrics['data']['copies_of_training_cells']} of the {metrics['n_cells']} evaluated" in caplog.text
    )


def test_re_prepared_data_is_refused_by_evaluate(pbmc68k_path, tmp_path, cli):
    """Issue 12, item 1: prepare, baseline, prepare --overwrite --seed 1, evaluate: refused, not metrics
    on the run's training cells."""
    data, run = tmp_path / "prep", tmp_path / "lr"
    prepare(pbmc68k_path, out=data, **PREPARE)
    cellformer.baseline(data, method="logreg", out=run)
    assert cellformer.evaluate(run)["n_cells"] > 0
    prepare(pbmc68k_path, out=data, overwrite=True, seed=1, **PREPARE)
    line = error_line(*cli("evaluate", run))
    assert f"run {run} was not trained on prepared dataset {data}" in line and "train it again" in line
    # the prepared data of another seed: a run trained on it is not compared with the old one
    other = cellformer.baseline(data, method="logreg", out=tmp_path / "lr_seed1")
    line = error_line(*cli("compare", run, other, "--out", tmp_path / "report"))
    assert "cells differ" in line or "different test cells" in line
    shutil.rmtree(run / "metrics")  # compare evaluates it again: refused the same way
    line = error_line(*cli("compare", run, "--out", tmp_path / "report"))
    assert "was not trained on prepared dataset" in line and not (tmp_path / "report").exists()


def test_metrics_recorded_on_other_data_are_evaluated_again(logreg_run, copy_of, tmp_path):
    from cellformer.evaluation.report import needs_evaluation

    run = copy_of(logreg_run)
    cellformer.evaluate(run)
    assert not needs_evaluation(run, "test")
    path = run / "metrics" / "test.json"
    metrics = json.loads(path.read_text())
    metrics["data"]["prepared_fingerprint"] = "0" * 64
    path.write_text(json.dumps(metrics))
    assert needs_evaluation(run, "test")


def test_run_without_a_data_fingerprint_is_refused(logreg_run, copy_of):
    """Another cellformer version's run: whether the data are the ones it was trained on is unknown."""
    run = copy_of(logreg_run)
    config = json.loads((run / "config.json").read_text())
    del config["data_fingerprint"]
    (run / "config.json").write_text(json.dumps(config))
    rerecord(run)  # its own manifest (another version's), not damage
    with pytest.raises(RunDirError, match=r"records no data_fingerprint .*another cellformer.*train it"):
        cellformer.evaluate(run)
