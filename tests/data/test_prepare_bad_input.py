"""Every bad input gets one clear line on stderr, exit code 2, no output directory, and an untouched input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from prep_helpers import SMALL, make_adata, sha256


def _fails(cli, path, tmp_path, *args, expect: list[str], test=None):
    """Run prepare on ``path``; assert exit 2, the message parts, no traceback, no output, input unchanged."""
    before = [sha256(p) for p in (path, test) if p is not None]
    out = tmp_path / "out"
    extra = ["--test", test] if test is not None else []
    code, err = cli("prepare", path, "--out", out, *SMALL, *extra, *args)
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for part in expect:
        assert part in err, (part, err)
    assert not out.exists()
    assert [sha256(p) for p in (path, test) if p is not None] == before
    assert not list(tmp_path.glob(".out.tmp-*")), "temporary directory left behind"
    return err


def test_misspelt_label_key_lists_columns(cli, counts_h5ad, tmp_path):
    err = _fails(
        cli, counts_h5ad, tmp_path, "--label-key", "celltype", expect=["'celltype' not found in obs"]
    )
    assert "cell_type, class_id" in err and str(counts_h5ad) in err


def test_missing_layer_lists_layers(cli, write_h5ad, tmp_path):
    adata = make_adata()
    adata.layers["spliced"] = adata.X.copy()
    path = write_h5ad(adata)
    _fails(cli, path, tmp_path, "--layer", "counts", expect=["layer 'counts' not found", "X, spliced"])


def test_missing_gene_key_lists_columns(cli, counts_h5ad, tmp_path):
    _fails(
        cli, counts_h5ad, tmp_path, "--gene-key", "ensembl", expect=["gene column 'ensembl' not found in var"]
    )


def test_log_normalized_values_suggest_flag(cli, write_h5ad, tmp_path):
    adata = make_adata()
    adata.X = sp.csr_matrix(np.log1p(adata.X.toarray().astype(np.float32)))
    path = write_h5ad(adata)
    _fails(
        cli, path, tmp_path, expect=["not hold raw counts", "log-normalized", "--input-normalized", "--layer"]
    )


def test_fractional_values_suggest_flag(cli, write_h5ad, tmp_path):
    adata = make_adata()
    adata.X = sp.csr_matrix(adata.X.toarray().astype(np.float32) * 37.5)
    path = write_h5ad(adata)
    _fails(cli, path, tmp_path, expect=["not hold raw counts", "FPKM", "--input-normalized"])


def test_negative_values(cli, write_h5ad, tmp_path):
    adata = make_adata()
    dense = adata.X.toarray().astype(np.float32)
    dense[3, 2] = -1.0
    adata.X = sp.csr_matrix(dense)
    path = write_h5ad(adata)
    _fails(cli, path, tmp_path, "--input-normalized", expect=["negative values", "--layer"])


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "infinite")])
def test_nan_and_inf(cli, write_h5ad, tmp_path, bad, word):
    adata = make_adata()
    dense = adata.X.toarray().astype(np.float32)
    dense[5, 1] = bad
    adata.X = sp.csr_matrix(dense)
    path = write_h5ad(adata)
    _fails(cli, path, tmp_path, expect=[f"contains {word} values", "X of"])


def test_cells_without_counts(cli, write_h5ad, tmp_path):
    adata = make_adata()
    dense = adata.X.toarray()
    dense[[4, 7]] = 0
    adata.X = sp.csr_matrix(dense)
    path = write_h5ad(adata)
    _fails(cli, path, tmp_path, "--min-genes", "0", expect=["2 cells", "have no counts", "--min-genes"])


def test_cells_without_counts_are_filtered_by_qc(cli, write_h5ad, tmp_path):
    import json

    adata = make_adata()
    dense = adata.X.toarray()
    dense[[4, 7]] = 0
    adata.X = sp.csr_matrix(dense)
    path = write_h5ad(adata)
    code, err = cli("prepare", path, "--out", tmp_path / "out", *SMALL)
    assert code == 0, err
    steps = json.loads((tmp_path / "out" / "qc.json").read_text())["files"][path.name]["steps"]
    assert {s["step"]: s.get("removed_cells") for s in steps}["min_genes"] == 2


def test_duplicate_gene_names(cli, write_h5ad, tmp_path):
    adata = make_adata()
    adata.var_names = ["G1"] * 2 + [f"G{j}" for j in range(2, adata.n_vars)]
    path = write_h5ad(adata)
    _fails(
        cli, path, tmp_path, expect=["duplicated gene name", "'G1'", "var_names_make_unique", "--gene-key"]
    )


def test_test_file_with_little_gene_overlap(cli, counts_h5ad, write_h5ad, tmp_path):
    other = make_adata(n_cells=30, seed=1)
    other.var_names = [f"G{j}" for j in range(5)] + [f"ENSG{j}" for j in range(5, other.n_vars)]
    test = write_h5ad(other, "test.h5ad")
    _fails(
        cli, counts_h5ad, tmp_path, test=test, expect=["shares only 5 of the 40 training genes", "--gene-key"]
    )


def test_test_file_with_no_gene_overlap(cli, counts_h5ad, write_h5ad, tmp_path):
    test = write_h5ad(make_adata(n_cells=30, seed=1, gene_prefix="ENSG"), "test.h5ad")
    _fails(
        cli, counts_h5ad, tmp_path, "--min-gene-overlap", "0", test=test, expect=["shares only 0 of the 40"]
    )


def test_single_class(cli, write_h5ad, tmp_path):
    adata = make_adata()
    adata.obs["cell_type"] = "T cell"
    path = write_h5ad(adata)
    _fails(cli, path, tmp_path, expect=["single class (T cell)", "at least two", "--label-key"])


def test_empty_file(cli, tmp_path):
    path = tmp_path / "empty.h5ad"
    path.write_bytes(b"")
    _fails(cli, path, tmp_path, expect=["is empty (0 bytes)"])


def test_corrupt_file(cli, tmp_path):
    path = tmp_path / "corrupt.h5ad"
    path.write_bytes(b"this is not an HDF5 file at all\n" * 100)
    _fails(cli, path, tmp_path, expect=["cannot read", "corrupt"])


def test_truncated_file(cli, counts_h5ad, tmp_path):
    path = tmp_path / "truncated.h5ad"
    path.write_bytes(counts_h5ad.read_bytes()[:2000])
    _fails(cli, path, tmp_path, expect=[str(path)])


def test_h5ad_without_cells(cli, write_h5ad, tmp_path):
    path = write_h5ad(make_adata()[:0].copy(), "nocells.h5ad")
    _fails(cli, path, tmp_path, expect=["is empty (0 cells"])


def test_hdf5_that_is_not_anndata(cli, tmp_path):
    import h5py

    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as handle:
        handle["matrix"] = np.ones((3, 3))
    _fails(cli, path, tmp_path, expect=["no readable 'obs' table"])


def test_missing_input_file(cli, tmp_path):
    code, err = cli("prepare", tmp_path / "nope.h5ad", "--out", tmp_path / "out")
    assert code == 2 and "does not exist" in err


def test_existing_output_is_refused_then_overwritten(cli, counts_h5ad, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = cli("prepare", counts_h5ad, "--out", out, *SMALL)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"
    code, err = cli("prepare", counts_h5ad, "--out", out, *SMALL, "--overwrite")
    assert code == 0, err
    assert (out / "meta.json").exists() and not (out / "keep.txt").exists()


def test_bad_option_values(cli, counts_h5ad, tmp_path):
    code, err = cli("prepare", counts_h5ad, "--out", tmp_path / "out", "--max-genes", "0")
    assert code == 2 and "max_genes must be positive" in err
    code, err = cli("prepare", counts_h5ad, "--out", tmp_path / "out", "--tokenizer", "words")
    assert code == 2 and "unknown tokenizer 'words'" in err


def test_unseen_test_labels_are_kept_and_reported(cli, counts_h5ad, write_h5ad, tmp_path, caplog):
    import json

    import pandas as pd

    other = make_adata(n_cells=30, seed=1)
    other.obs["cell_type"] = pd.Categorical(["type_0", "type_1", "platelet", "type_2", "neuron"] * 6)
    test = write_h5ad(other, "test.h5ad")
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        code, err = cli("prepare", counts_h5ad, "--out", out, "--test", test, *SMALL)
    assert code == 0, err
    assert "neuron, platelet" in caplog.text
    classes = json.loads((out / "classes.json").read_text())
    assert classes == {"classes": ["type_0", "type_1", "type_2"], "unseen": ["neuron", "platelet"]}
    labels = np.load(out / "labels.npy")
    cells = pd.read_csv(out / "cells.csv.gz")
    assert (cells["label"] == "neuron").sum() == 6
    assert set(labels[(cells["label"] == "neuron").to_numpy()]) == {3}
    assert set(cells.loc[cells["label"] == "platelet", "split"]) <= {"val", "test"}
    assert json.loads((out / "meta.json").read_text())["unseen_labels"] == {"neuron": 6, "platelet": 6}


def test_directory_as_input(cli, tmp_path):
    (tmp_path / "cells.zarr").mkdir()
    code, err = cli("prepare", tmp_path / "cells.zarr", "--out", tmp_path / "out")
    assert code == 2 and "is a directory" in err


def test_file_corrupt_in_the_middle(cli, tmp_path):
    path = tmp_path / "damaged.h5ad"
    make_adata(n_cells=400, n_genes=200).write_h5ad(path, compression="gzip")
    raw = bytearray(path.read_bytes())
    third = len(raw) // 3
    raw[third : 2 * third] = b"\xff" * third
    path.write_bytes(bytes(raw))
    _fails(cli, path, tmp_path, expect=["corrupt"])


def test_missing_previous_layer(cli, counts_h5ad, tmp_path):
    _fails(
        cli, counts_h5ad, tmp_path, "--previous-layer", "X_previous", expect=["layer 'X_previous' not found"]
    )


def test_output_over_the_input_is_refused(cli, counts_h5ad, tmp_path):
    before = sha256(counts_h5ad)
    for out in (counts_h5ad, tmp_path):
        code, err = cli("prepare", counts_h5ad, "--out", out, "--overwrite", *SMALL)
        assert code == 2 and "would contain or replace the input" in err
    assert sha256(counts_h5ad) == before


def test_previous_layer_that_is_not_counts(cli, write_h5ad, tmp_path):
    adata = make_adata()
    adata.layers["X_previous"] = sp.csr_matrix(np.log1p(adata.X.toarray().astype(np.float32)))
    path = write_h5ad(adata)
    _fails(
        cli, path, tmp_path, "--previous-layer", "X_previous", expect=["layer 'X_previous'", "non-integer"]
    )
