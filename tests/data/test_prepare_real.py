"""``prepare`` on every labelled dataset in ../shared/data, checked against a direct in-memory computation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from prep_helpers import sha256

from cellformer.preparation.prepare import prepare
from cellformer.preparation.prepared import PreparedData
from cellformer.tokenize.binned import BinnedTokenizer
from cellformer.tokenize.rank import RankTokenizer
from cellformer.tokens import CLS, N_SPECIAL, SEP


def expected_tokens(prepared: PreparedData, matrices: dict[str, sp.csr_matrix], normalize_total: bool):
    """Tokens computed in memory: the kept cells of each file, columns aligned by gene name."""
    cells = pd.read_csv(prepared.path / "cells.csv.gz")
    genes = prepared.genes
    parts = []
    for source, (matrix, obs_names, var_names) in matrices.items():
        names = cells.loc[cells["source"] == source, "obs_name"].astype(str)
        rows = pd.Index(obs_names).get_indexer(names)
        cols = pd.Index(var_names).get_indexer(genes)
        X = sp.csr_matrix(matrix)[rows]
        aligned = sp.lil_matrix((len(rows), len(genes)), dtype=np.float64)
        present = cols >= 0
        aligned[:, np.flatnonzero(present)] = X[:, cols[present]]
        parts.append(sp.csr_matrix(aligned))
    X = sp.vstack(parts).tocsr()
    config = prepared.meta["config"]
    tokenizer = RankTokenizer(max_genes=config["max_genes"], normalize_total=normalize_total)
    tokenizer.fit([X[prepared.splits["train"]]])
    if config["tokenizer"] == "hybrid" and config["n_hvg"] < X.shape[1]:  # ranks only the HVGs
        hvg = BinnedTokenizer(n_hvg=config["n_hvg"], flavor="seurat_v3" if normalize_total else "seurat")
        hvg.fit([X[prepared.splits["train"]]])
        kept = np.zeros(X.shape[1], dtype=bool)
        kept[hvg.hvg] = True
        tokenizer.medians = np.where(kept, tokenizer.medians, np.nan)
    np.testing.assert_allclose(tokenizer.medians, prepared.tokenizer().medians, rtol=1e-6, equal_nan=True)
    return tokenizer.transform(X)


def assert_complete(prepared: PreparedData) -> None:
    n = len(prepared.labels)
    rows = np.sort(np.concatenate(list(prepared.splits.values())))
    assert rows.tolist() == list(range(n)), "splits must partition the store"
    assert len(prepared.store) == n == prepared.meta["n_cells"]
    assert prepared.store.ids[prepared.store.offsets[:-1]].tolist() == [CLS] * n
    assert prepared.store.lengths.max() == prepared.meta["max_length"]
    assert prepared.store.ids.max() < prepared.vocab_size
    assert set(prepared.labels[prepared.splits["train"]]) == set(range(prepared.n_classes))
    cells = pd.read_csv(prepared.path / "cells.csv.gz")
    assert list(cells.columns) == ["obs_name", "source", "split", "label"] and len(cells) == n
    ids = np.array(
        [(prepared.classes + prepared.unseen).index(label) for label in cells["label"].astype(str)]
    )
    np.testing.assert_array_equal(ids, prepared.labels)
    for split, split_rows in prepared.splits.items():
        assert set(cells["split"].iloc[split_rows]) <= {split}
    assert json.loads((prepared.path / "qc.json").read_text()) == prepared.meta["qc"]


def test_bladder_counts(bladder_path, tmp_path):
    import anndata as ad

    before = sha256(bladder_path)
    prepared = prepare(bladder_path, out=tmp_path / "bladder", label_key="cell_type", max_genes=48)
    assert sha256(bladder_path) == before
    assert_complete(prepared)
    assert prepared.n_classes == 16 and prepared.unseen == []
    assert prepared.classes[:3] == ["class_1", "class_2", "class_3"]
    meta = prepared.meta
    assert meta["inputs"][0]["sha256"] == before and meta["inputs"][0]["value_transform"] == "none"
    assert meta["config"]["max_genes"] == 48 and meta["seed"] == 0 and "numpy" in meta["versions"]
    sizes = meta["splits"]["sizes"]
    assert abs(sizes["train"] / 2100 - 0.70) < 0.02 and abs(sizes["test"] / 2100 - 0.15) < 0.02
    steps = {s["step"]: s for s in meta["qc"]["files"]["mouse_bladder_2100.h5ad"]["steps"]}
    assert not steps["max_mito_fraction"]["enabled"] and "MT-" in steps["max_mito_fraction"]["reason"]
    assert meta["qc"]["genes"]["min_cells"]["removed_genes"] > 0

    adata = ad.read_h5ad(bladder_path)
    expected = expected_tokens(
        prepared, {bladder_path.name: (adata.X, adata.obs_names, adata.var_names)}, True
    )
    np.testing.assert_array_equal(expected.offsets, prepared.store.offsets)
    np.testing.assert_array_equal(expected.ids, prepared.store.ids)


def test_pbmc68k_log1p_with_input_normalized(pbmc68k_path, tmp_path):
    import anndata as ad

    before = sha256(pbmc68k_path)
    prepared = prepare(
        pbmc68k_path, out=tmp_path / "pbmc", label_key="cell_type", input_normalized=True, max_genes=32
    )
    assert sha256(pbmc68k_path) == before
    assert_complete(prepared)
    assert prepared.meta["inputs"][0]["value_transform"] == "expm1"
    assert prepared.meta["config"]["input_normalized"] is True
    steps = {s["step"]: s for s in prepared.meta["qc"]["files"]["pbmc68k_reduced.h5ad"]["steps"]}
    assert not steps["max_mito_fraction"]["enabled"] and "normalized" in steps["max_mito_fraction"]["reason"]
    assert prepared.n_classes == 10

    adata = ad.read_h5ad(pbmc68k_path)
    X = sp.csr_matrix(adata.X)
    X.data = np.expm1(X.data.astype(np.float64)).astype(np.float32)
    expected = expected_tokens(prepared, {pbmc68k_path.name: (X, adata.obs_names, adata.var_names)}, False)
    np.testing.assert_array_equal(expected.ids, prepared.store.ids)


def test_hsmm_fpkm_with_input_normalized(hsmm_path, tmp_path):
    before = sha256(hsmm_path)
    prepared = prepare(
        hsmm_path, out=tmp_path / "hsmm", input_normalized=True, max_genes=32, min_genes=500, tokenizer="rank"
    )
    assert sha256(hsmm_path) == before
    assert_complete(prepared)
    assert prepared.classes == ["0h", "24h", "48h", "72h"]
    assert prepared.meta["inputs"][0]["value_transform"] == "none"
    assert prepared.tokenizer().normalize_total is False
    assert prepared.genes[0].startswith("ENSG")


@pytest.fixture(scope="module")
def bladder_split(bladder_path, tmp_path_factory):
    """A 500-cell training file and a 300-cell test file (with fewer genes and a previous layer) from bladder."""
    import anndata as ad

    adata = ad.read_h5ad(bladder_path)
    order = np.random.default_rng(0).permutation(adata.n_obs)
    folder = tmp_path_factory.mktemp("bladder_split")
    train = adata[np.sort(order[:500])].copy()
    test = adata[np.sort(order[500:800]), 1500:].copy()
    shift = np.random.default_rng(1).permutation(test.n_obs)
    test.layers["X_previous"] = test.X[shift]
    train.write_h5ad(folder / "train.h5ad")
    test.write_h5ad(folder / "test.h5ad")
    return folder / "train.h5ad", folder / "test.h5ad"


def test_test_file_split_and_aligned(bladder_split, tmp_path):
    import anndata as ad

    train_path, test_path = bladder_split
    hashes = [sha256(train_path), sha256(test_path)]
    prepared = prepare(train_path, out=tmp_path / "p", test=test_path, max_genes=40, min_genes=50)
    assert [sha256(train_path), sha256(test_path)] == hashes
    assert_complete(prepared)
    meta = prepared.meta
    assert [i["role"] for i in meta["inputs"]] == ["train", "test"]
    n_train = meta["inputs"][0]["n_cells_kept"]
    np.testing.assert_array_equal(prepared.splits["train"], np.arange(n_train))
    n_val, n_test = len(prepared.splits["val"]), len(prepared.splits["test"])
    assert abs(n_val / (n_val + n_test) - 0.6) < 0.05
    assert meta["gene_overlap"]["shared"] < meta["gene_overlap"]["vocab_genes"]

    matrices = {}
    for path in (train_path, test_path):
        adata = ad.read_h5ad(path)
        matrices[path.name] = (adata.X, adata.obs_names, adata.var_names)
    expected = expected_tokens(prepared, matrices, True)
    np.testing.assert_array_equal(expected.ids, prepared.store.ids)

    parallel = prepare(
        train_path, out=tmp_path / "p2", test=test_path, max_genes=40, min_genes=50, workers=2, chunk_size=64
    )
    np.testing.assert_array_equal(parallel.store.offsets, prepared.store.offsets)
    np.testing.assert_array_equal(parallel.store.ids, prepared.store.ids)
    np.testing.assert_array_equal(parallel.labels, prepared.labels)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(parallel.splits[split], prepared.splits[split])


def test_previous_layer(bladder_split, tmp_path):
    import anndata as ad

    _, test_path = bladder_split
    prepared = prepare(
        test_path, out=tmp_path / "prev", previous_layer="X_previous", max_genes=20, min_genes=50
    )
    assert_complete(prepared)
    adata = ad.read_h5ad(test_path)
    cells = pd.read_csv(prepared.path / "cells.csv.gz")
    rows = adata.obs_names.get_indexer(cells["obs_name"].astype(str))
    cols = adata.var_names.get_indexer(prepared.genes)
    tokenizer = prepared.tokenizer()
    expected = tokenizer.transform(adata.X[rows][:, cols], previous=adata.layers["X_previous"][rows][:, cols])
    np.testing.assert_array_equal(expected.ids, prepared.store.ids)
    first = prepared.store.cell(0)[0]
    assert first[0] == CLS and (first == SEP).sum() == 1
    sep = int(np.flatnonzero(first == SEP)[0])
    assert 1 < sep <= 11 and len(first) <= 22 and (first[1:sep] >= N_SPECIAL).all()
