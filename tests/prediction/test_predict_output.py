"""What ``cellformer predict`` writes: key names, overwrite warning, compressed output, option checks."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

import cellformer
from cellformer.calibration.unknown import DEFAULT_QUANTILE


def _subset(bladder, n=120, seed=5):
    rows = np.sort(np.random.default_rng(seed).choice(bladder.n_obs, n, replace=False))
    return bladder[rows].copy()


def test_existing_keys_are_replaced_with_a_warning(bladder, withheld_runs, caplog):
    adata = _subset(bladder)
    cellformer.predict(adata, withheld_runs["logreg"], copy=False)
    with caplog.at_level(logging.WARNING, logger="cellformer.prediction"):
        cellformer.predict(adata, withheld_runs["logreg"], copy=False)
    assert "already has obs['cellformer_prediction']" in caplog.text and "replacing" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cellformer.prediction"):
        cellformer.predict(adata, withheld_runs["logreg"], copy=False, key_added="other")
    assert "already has" not in caplog.text


def test_cli_key_added_and_compressed_output(bladder, withheld_runs, tmp_path, capsys):
    source = tmp_path / "cells.h5ad"
    adata = _subset(bladder)
    adata.obs["cellformer_prediction"] = "from an earlier tool"
    adata.write_h5ad(source)
    out = tmp_path / "out.h5ad"
    from cellformer.cli import main

    args = ["predict", str(withheld_runs["logreg"]), str(source), "--out", str(out), "--key-added", "cf"]
    assert main([*args, "--no-umap"]) == 0
    assert "flagged unknown" in capsys.readouterr().out
    import anndata as ad

    written = ad.read_h5ad(out)
    assert (written.obs["cellformer_prediction"] == "from an earlier tool").all()  # kept
    assert {"cf_prediction", "cf_confidence", "cf_unknown"} <= set(written.obs)
    assert written.uns["cf"]["params"]["embedding"] == "PCA of the training features"
    with h5py.File(out, "r") as f:
        assert f["obsm"]["cf_proba"].compression == "gzip"
        assert f["obsm"]["X_cf"].compression == "gzip"


@pytest.mark.parametrize("value", ["2", "0", "-0.5", "abc"])
def test_min_gene_overlap_must_be_a_fraction(value, tmp_path, capsys):
    from cellformer.cli import main

    with pytest.raises(SystemExit) as exc:
        main(
            [
                "predict",
                str(tmp_path),
                str(tmp_path / "x.h5ad"),
                "--out",
                "y.h5ad",
                "--min-gene-overlap",
                value,
            ]
        )
    assert exc.value.code == 2 and "fraction in (0, 1]" in capsys.readouterr().err


def test_help_shows_defaults(capsys):
    from cellformer.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0.5 unless changed" in text and "--key-added" in text and "X_cellformer_umap" in text
    assert "--unknown-quantile" in text and f"({DEFAULT_QUANTILE}" in text
    assert "--prepared" not in text  # a run carries its calibration: predict never reads prepared data


def test_input_errors_name_the_input_file(bladder, withheld_runs, tmp_path, capsys):
    """An error about the cells to annotate names the file they came from, not "the input AnnData"."""
    from cellformer.cli import main

    source = tmp_path / "duplicated_symbols.h5ad"
    adata = _subset(bladder, n=40)
    adata.var["symbol"] = ["same"] * 2 + list(adata.var_names[2:])
    adata.write_h5ad(source)
    args = ["predict", str(withheld_runs["logreg"]), str(source), "--out", str(tmp_path / "o.h5ad")]
    assert main([*args, "--gene-key", "symbol", "--no-umap"]) == 2
    err = capsys.readouterr().err
    assert f"var['symbol'] of {source}" in err and "the input AnnData" not in err
