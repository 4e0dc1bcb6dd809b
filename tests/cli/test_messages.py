"""Error messages that say what is wrong and what to do, in one line (exit 2), and honest logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from cellformer.errors import RunDirError
from cellformer.preparation.prepared import PreparedData


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_forced_log1p_on_linear_values_is_one_clear_error(cli, hsmm_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    err = _one_line_error(
        *cli("prepare", hsmm_path, "--input-normalized", "--input-transform", "log1p", "--out", out,
             "--min-genes", "20")
    )  # fmt: skip
    assert f"values up to 4.77e+04 in X of {hsmm_path} cannot be log1p-transformed" in err
    assert "--input-transform none" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_input_transform_needs_input_normalized(cli, hsmm_path: Path, tmp_path: Path) -> None:
    err = _one_line_error(*cli("prepare", hsmm_path, "--input-transform", "none", "--out", tmp_path / "x"))
    assert "add --input-normalized" in err


def test_log_says_whether_log1p_was_detected_or_forced(cli, tmp_path: Path, caplog) -> None:
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = np.log1p(rng.poisson(2.0, size=(60, 30)).astype(np.float32))
    X[:, 0] += 0.5
    obs = {"cell_type": [f"t{i % 2}" for i in range(60)]}
    path = tmp_path / "log1p.h5ad"
    ad.AnnData(sp.csr_matrix(X), obs=obs).write_h5ad(path)
    small = ["--min-genes", "1", "--min-cells", "1", "--max-genes", "8", "--input-normalized"]
    with caplog.at_level(logging.INFO, logger="cellformer.preparation.prepare"):
        assert cli("prepare", path, "--out", tmp_path / "auto", *small)[0] == 0
        assert "log1p detected, undone with expm1" in caplog.text
        caplog.clear()
        assert (
            cli("prepare", path, "--out", tmp_path / "forced", *small, "--input-transform", "log1p")[0] == 0
        )
        assert "log1p forced by --input-transform log1p" in caplog.text and "detected" not in caplog.text


def test_h5ad_or_run_directory_instead_of_prepared_dataset(cli, hsmm_path: Path, tmp_path: Path) -> None:
    for command in (["train"], ["baseline", "--method", "logreg"]):
        err = _one_line_error(*cli(*command, hsmm_path, "--out", tmp_path / "x"))
        assert "is an .h5ad file, not a prepared dataset" in err
        assert f"cellformer prepare {hsmm_path} --out DIR" in err
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "transformer", "prepared": {"path": "/data/prep"}}))
    with pytest.raises(
        RunDirError, match="is a transformer run directory made from prepared dataset /data/prep"
    ):
        PreparedData(run)
    with pytest.raises(RunDirError, match="not a complete prepared dataset"):  # an interrupted prepare
        PreparedData(tmp_path)


def test_compare_refuses_the_same_run_twice(cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    err = _one_line_error(*cli("compare", run, f"{run}/", "--out", tmp_path / "report"))
    assert "given twice" in err


def test_duplicated_gene_column_and_counts_layer_advice(cli, tmp_path: Path) -> None:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    counts = rng.poisson(3.0, size=(40, 20)).astype(np.float32) + 1
    var = pd.DataFrame({"symbol": [f"S{j // 2}" for j in range(20)]}, index=[f"G{j}" for j in range(20)])
    adata = ad.AnnData(
        sp.csr_matrix(np.log1p(counts)), obs={"cell_type": ["a", "b"] * 20}, var=var,
        layers={"counts": sp.csr_matrix(counts)},
    )  # fmt: skip
    path = tmp_path / "lognorm.h5ad"
    adata.write_h5ad(path)
    err = _one_line_error(*cli("prepare", path, "--out", tmp_path / "x"))
    assert "looks log-normalized" in err and "has a 'counts' layer: pass --layer counts" in err
    err = _one_line_error(*cli("prepare", path, "--out", tmp_path / "x", "--gene-key", "symbol"))
    assert "var['symbol']" in err and str(path) in err and "var_names_make_unique" not in err
    assert "choose a var column with unique values with --gene-key" in err
