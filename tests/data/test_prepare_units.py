"""The pieces of ``prepare`` on small synthetic files: splits, reading formats, labels, QC, atomicity, streaming."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from prep_helpers import SMALL_OPTIONS, make_adata

import cellformer
from cellformer.data.read import H5adReader
from cellformer.data.splits import stratified_split
from cellformer.data.view import align_columns, column_map
from cellformer.errors import ConfigError, InputError
from cellformer.preparation.prepare import prepare


# -- splits ---------------------------------------------------------------------------------------
def test_stratified_split_fractions_and_tiny_classes():
    labels = np.array(["a"] * 100 + ["b"] * 20 + ["c"] * 2 + ["d"] * 1 + ["e"] * 3, dtype=object)
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    splits, report = stratified_split(labels, fractions, home="train", seed=3)
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(len(labels)))
    assert report["per_class"]["a"] == {"train": 70, "val": 15, "test": 15}
    assert report["per_class"]["b"] == {"train": 14, "val": 3, "test": 3}
    assert report["per_class"]["e"] == {"train": 1, "val": 1, "test": 1}
    assert report["small_classes"] == {
        "c": {"n_cells": 2, "all_in": "train"},
        "d": {"n_cells": 1, "all_in": "train"},
    }
    again, _ = stratified_split(labels, fractions, home="train", seed=3)
    other, _ = stratified_split(labels, fractions, home="train", seed=4)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    assert not np.array_equal(splits["val"], other["val"])


def test_val_test_split_of_a_test_file():
    labels = np.array(["a"] * 10 + ["b"] * 2 + ["c"], dtype=object)
    splits, report = stratified_split(labels, {"val": 0.6, "test": 0.4}, home="test", seed=0)
    assert report["per_class"]["a"] == {"val": 6, "test": 4}
    assert report["per_class"]["b"] == {"val": 1, "test": 1}
    assert report["small_classes"] == {"c": {"n_cells": 1, "all_in": "test"}}


def test_zero_val_fraction_gives_empty_val():
    labels = np.array(["a"] * 10 + ["b"] * 10, dtype=object)
    splits, _ = stratified_split(labels, {"train": 0.8, "val": 0.0, "test": 0.2}, home="train", seed=0)
    assert len(splits["val"]) == 0 and len(splits["test"]) == 4


# -- reading --------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["csc", "dense", "raw", "layer"])
def test_matrix_layouts_read_the_same(write_h5ad, tmp_path, layout):
    adata = make_adata(n_cells=30, n_genes=12)
    expected = adata.X.toarray()
    layer = None
    if layout == "csc":
        adata.X = sp.csc_matrix(adata.X)
    elif layout == "dense":
        adata.X = expected.copy()
    elif layout == "raw":
        adata.raw = adata.copy()
        adata.X = sp.csr_matrix(np.log1p(expected.astype(np.float32)))
        layer = "raw.X"
    else:
        adata.layers["counts"] = adata.X.copy()
        adata.X = sp.csr_matrix(expected * 0.5)
        layer = "counts"
    path = write_h5ad(adata)
    with H5adReader(path, layer=layer) as reader:
        assert reader.shape == (30, 12)
        blocks = [X.toarray() for _, X in reader.iter_blocks(7)]
        assert [b.shape[0] for b in blocks] == [7, 7, 7, 7, 2]
        np.testing.assert_array_equal(np.vstack(blocks), expected)
        assert reader.gene_names().tolist() == [f"G{j}" for j in range(12)]


def test_gene_key_and_alignment(write_h5ad):
    adata = make_adata(n_cells=5, n_genes=4)
    adata.var["ensembl"] = ["E0", "E1", "E2", "E3"]
    path = write_h5ad(adata)
    with H5adReader(path, gene_key="ensembl") as reader:
        genes = reader.gene_names()
        assert genes.tolist() == ["E0", "E1", "E2", "E3"]
        col_map = column_map(genes, ["E3", "E1", "E9"])
        assert col_map.tolist() == [-1, 1, -1, 0]
        X = reader.read_rows(0, 5)
    aligned = align_columns(X, col_map, 3).toarray()
    np.testing.assert_array_equal(aligned[:, 0], X.toarray()[:, 3])
    np.testing.assert_array_equal(aligned[:, 1], X.toarray()[:, 1])
    assert not aligned[:, 2].any()


def test_gene_key_used_by_prepare(write_h5ad, tmp_path):
    adata = make_adata()
    adata.var["symbol"] = [f"S{j}" for j in range(adata.n_vars)]
    prepared = prepare(write_h5ad(adata), out=tmp_path / "out", gene_key="symbol", **SMALL_OPTIONS)
    assert prepared.genes[:2] == ["S0", "S1"]


# -- labels ---------------------------------------------------------------------------------------
def test_integer_labels_and_missing_labels(write_h5ad, tmp_path):
    adata = make_adata(n_cells=120, n_classes=12)
    labels = pd.Series(adata.obs["class_id"].to_numpy(), dtype="float64")
    labels.iloc[[0, 1, 2]] = np.nan
    adata.obs["numeric"] = labels.to_numpy()
    prepared = prepare(write_h5ad(adata), out=tmp_path / "out", label_key="numeric", **SMALL_OPTIONS)
    assert prepared.classes == [str(i) for i in range(12)]  # "2" before "10"
    assert len(prepared.labels) == 117
    steps = {s["step"]: s for s in prepared.meta["qc"]["files"]["cells.h5ad"]["steps"]}
    assert steps["missing_label"]["removed_cells"] == 3


def test_categorical_labels_and_cells_table(counts_h5ad, tmp_path):
    prepared = prepare(counts_h5ad, out=tmp_path / "out", **SMALL_OPTIONS)
    cells = pd.read_csv(prepared.path / "cells.csv.gz")
    assert cells["obs_name"].tolist() == [f"cell{i}" for i in range(90)]
    assert set(cells["source"]) == {"counts.h5ad"}
    assert prepared.classes == ["type_0", "type_1", "type_2"]


# -- QC -------------------------------------------------------------------------------------------
def test_mitochondrial_fraction_filter(write_h5ad, tmp_path):
    adata = make_adata(n_cells=60, n_genes=30)
    adata.var_names = [f"MT-{j}" if j < 3 else f"G{j}" for j in range(30)]
    dense = adata.X.toarray()
    dense[:, :3] = 0
    dense[:5, :3] = 1000  # five cells are mostly mitochondrial
    dense[:, 3] += 1
    adata.X = sp.csr_matrix(dense)
    path = write_h5ad(adata)
    prepared = prepare(path, out=tmp_path / "on", **SMALL_OPTIONS)
    steps = {s["step"]: s for s in prepared.meta["qc"]["files"]["cells.h5ad"]["steps"]}
    assert steps["max_mito_fraction"]["enabled"] and steps["max_mito_fraction"]["removed_cells"] == 5
    assert steps["max_mito_fraction"]["n_mito_genes"] == 3
    assert len(prepared.labels) == 55
    off = prepare(path, out=tmp_path / "off", max_mito_fraction=None, **SMALL_OPTIONS)
    assert len(off.labels) == 60


def test_mito_symbols_from_a_var_column(write_h5ad, tmp_path):
    adata = make_adata(n_cells=30, n_genes=10)
    adata.var_names = [f"ENSG{j}" for j in range(10)]
    adata.var["gene_symbols"] = ["mt-Co1"] + [f"Gene{j}" for j in range(1, 10)]
    prepared = prepare(write_h5ad(adata), out=tmp_path / "out", **SMALL_OPTIONS)
    step = {s["step"]: s for s in prepared.meta["qc"]["files"]["cells.h5ad"]["steps"]}["max_mito_fraction"]
    assert step["enabled"] and step["genes_from"] == "var['gene_symbols']"


def test_min_genes_and_min_cells(write_h5ad, tmp_path):
    adata = make_adata(n_cells=60, n_genes=30)
    dense = adata.X.toarray()
    dense[:, 29] = 0
    dense[0, 29] = 4  # expressed in one cell only
    dense[1] = 0
    dense[1, 0] = 3  # a cell with one gene
    adata.X = sp.csr_matrix(dense)
    prepared = prepare(write_h5ad(adata), out=tmp_path / "out", min_genes=2, min_cells=2, max_genes=8)
    assert "G29" not in prepared.genes and len(prepared.genes) == 29
    assert len(prepared.labels) == 59
    assert prepared.meta["qc"]["genes"]["min_cells"]["removed_genes"] == 1


def test_doublets_with_scrublet(write_h5ad, tmp_path):
    adata = make_adata(n_cells=300, n_genes=150, n_classes=3)
    dense = adata.X.toarray()
    dense[:20] = dense[:20] + dense[41:61]  # 20 artificial doublets of two different classes
    adata.X = sp.csr_matrix(dense)
    prepared = prepare(write_h5ad(adata), out=tmp_path / "out", doublets=True, **SMALL_OPTIONS)
    steps = prepared.meta["qc"]["files"]["cells.h5ad"]["steps"]
    step = {s["step"]: s for s in steps}["doublets"]
    assert step["enabled"] and step["method"] == "scanpy.pp.scrublet" and step["threshold"] > 0
    assert 0 < step["removed_cells"] < 60
    assert len(prepared.labels) == 300 - sum(s.get("removed_cells", 0) for s in steps)


# -- API, atomicity, streaming --------------------------------------------------------------------
def test_public_api_and_unknown_option(counts_h5ad, tmp_path):
    assert cellformer.prepare is prepare
    with pytest.raises(ConfigError, match="unknown PrepareConfig key.*max_gene"):
        prepare(counts_h5ad, out=tmp_path / "out", max_gene=10)


def test_interrupted_run_leaves_nothing(counts_h5ad, tmp_path, monkeypatch):
    from cellformer.data import store

    def broken(self, cells):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.TokenStoreWriter, "append", broken)
    with pytest.raises(KeyboardInterrupt):
        prepare(counts_h5ad, out=tmp_path / "out", **SMALL_OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts.h5ad"]


def test_reads_in_chunks_and_output_does_not_depend_on_chunk_size(write_h5ad, tmp_path, monkeypatch):
    path = write_h5ad(make_adata(n_cells=150, n_genes=50))
    widest = []
    original = H5adReader._read_rows

    def spy(self, start, stop):
        widest.append(stop - start)
        return original(self, start, stop)

    monkeypatch.setattr(H5adReader, "_read_rows", spy)
    small = prepare(path, out=tmp_path / "small", chunk_size=16, **SMALL_OPTIONS)
    assert max(widest) <= 16
    big = prepare(path, out=tmp_path / "big", chunk_size=1000, **SMALL_OPTIONS)
    np.testing.assert_array_equal(small.store.ids, big.store.ids)
    np.testing.assert_array_equal(small.store.offsets, big.store.offsets)
    np.testing.assert_array_equal(small.tokenizer().medians, big.tokenizer().medians)
    small_meta = json.loads((small.path / "meta.json").read_text())
    assert small_meta["config"]["chunk_size"] == 16


def test_reader_errors_name_the_file(write_h5ad):
    path = write_h5ad(make_adata(n_cells=5, n_genes=4))
    with pytest.raises(InputError, match="layer 'nope' not found.*available layers: X"):
        H5adReader(path, layer="nope")
    with pytest.raises(InputError, match="has no adata.raw"):
        H5adReader(path, layer="raw.X")


@pytest.mark.parametrize("permuted", [False, True])
def test_align_columns_matches_dense_reference(permuted):
    rng = np.random.default_rng(0)
    X = sp.random(60, 40, density=0.2, format="csr", random_state=1)
    X.data[::5] = 0  # explicit zeros are dropped
    col_map = np.where(rng.random(40) < 0.7, np.arange(40), -1)
    if permuted:
        col_map = rng.permutation(np.r_[np.arange(30), -np.ones(10, np.int64)])
    n = int(col_map.max()) + 1
    out = align_columns(X, col_map, n)
    reference = np.zeros((60, n))
    for j, c in enumerate(col_map):
        if c >= 0:
            reference[:, c] = X.toarray()[:, j]
    np.testing.assert_array_equal(out.toarray(), reference)
    assert out.has_sorted_indices and (out.data != 0).all()


def test_train_and_test_files_with_the_same_name(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    make_adata(seed=0).write_h5ad(tmp_path / "a" / "cells.h5ad")
    make_adata(n_cells=30, seed=1).write_h5ad(tmp_path / "b" / "cells.h5ad")
    prepared = prepare(
        tmp_path / "a" / "cells.h5ad",
        out=tmp_path / "out",
        test=tmp_path / "b" / "cells.h5ad",
        **SMALL_OPTIONS,
    )
    assert len(prepared.meta["qc"]["files"]) == 2
    cells = pd.read_csv(prepared.path / "cells.csv.gz")
    assert cells["source"].iloc[-1] == str(tmp_path / "b" / "cells.h5ad")
    assert (cells["source"] == str(tmp_path / "a" / "cells.h5ad")).sum() == 90


def test_default_min_genes_scales_with_the_gene_panel(write_h5ad, tmp_path):
    """200 genes on whole transcriptomes; 1 % of a smaller panel's genes, so panels keep their cells."""
    from cellformer.config import PrepareConfig, auto_min_genes

    assert auto_min_genes(33_000) == 200 and auto_min_genes(20_000) == 200
    assert auto_min_genes(2_000) == 20 and auto_min_genes(765) == 8 and auto_min_genes(30) == 1
    assert PrepareConfig(min_genes=0).min_genes_for(2_000) == 0  # an explicit value wins
    adata = make_adata(n_cells=60, n_genes=300)
    dense = adata.X.toarray()
    dense[0] = 0
    dense[0, :2] = 1  # 2 of 300 genes: below the automatic 3
    adata.X = sp.csr_matrix(dense)
    prepared = prepare(write_h5ad(adata), out=tmp_path / "out", min_cells=1, max_genes=8)
    step = {s["step"]: s for s in prepared.meta["qc"]["files"]["cells.h5ad"]["steps"]}["min_genes"]
    assert step["threshold"] == 3 and step["rule"].startswith("auto") and step["removed_cells"] == 1
    assert len(prepared.labels) == 59


def test_default_qc_keeps_a_real_hvg_panel(kidney_path, tmp_path):
    """kidney (2,000 HVGs, median 116 expressed per cell): a fixed 200 dropped 70 % of its cells."""
    prepared = prepare(kidney_path, out=tmp_path / "kidney", max_genes=16)
    assert len(prepared.labels) > 0.95 * 5685
