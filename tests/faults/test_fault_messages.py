"""The remaining tracebacks and misleading messages: each is now one accurate line (or just works)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from faults_helpers import PREPARE, error_line

from cellformer.errors import ConfigError


def _write(adata, path: Path) -> Path:
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def small(small_h5ad):
    import anndata as ad

    return ad.read_h5ad(small_h5ad)


@pytest.mark.parametrize("key", ["a/b", "", " "])
def test_bad_key_added_is_refused_up_front(cli, small_run, small_h5ad, small, tmp_path, key):
    import cellformer

    out = tmp_path / "annotated.h5ad"
    line = error_line(*cli("predict", small_run, small_h5ad, "--out", out, "--key-added", key, "--no-umap"))
    assert "--key-added" in line and "'/'" in line, line
    assert list(tmp_path.iterdir()) == []  # nothing unreadable left
    with pytest.raises(ConfigError, match="key_added"):
        cellformer.predict(small[:20], small_run, key_added=key)


def test_out_of_range_sparse_index(cli, small_run, small_h5ad, tmp_path):
    path = tmp_path / "damaged.h5ad"
    path.write_bytes(small_h5ad.read_bytes())
    with h5py.File(path, "r+") as f:
        indices = f["X/indices"][:]
        indices[5] = 99_999
        f["X/indices"][...] = indices
    for args in (
        ("prepare", path, "--out", tmp_path / "prep", "--min-genes", 10),
        ("predict", small_run, path, "--out", tmp_path / "annotated.h5ad", "--no-umap"),
    ):
        line = error_line(*cli(*args))
        assert "damaged" in line and "99999" in line and str(path) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.h5ad"]


def test_two_prepares_racing_for_one_out(cli, small_h5ad, tmp_path, monkeypatch):
    import cellformer.preparation.prepare as prepare_module

    out = tmp_path / "prep"
    write_json = prepare_module.write_json

    def other_process_wins(path, obj):  # the other `prepare` renames its result into place first
        if Path(path).name == "meta.json":
            out.mkdir()
        return write_json(path, obj)

    monkeypatch.setattr(prepare_module, "write_json", other_process_wins)
    line = error_line(*cli("prepare", small_h5ad, "--out", out, "--min-genes", 10, "--max-genes", 64))
    assert "another process" in line and str(out) in line and "--overwrite" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep"]  # the winner's; no leftovers


def test_counts_with_float_noise_are_not_called_normalized(cli, small_run, small, tmp_path):
    noisy = small.copy()
    noisy.X = noisy.X.astype(np.float32)
    noisy.X.data += np.float32(1e-4) * np.random.default_rng(0).standard_normal(noisy.X.nnz, np.float32)
    path = _write(noisy, tmp_path / "noisy.h5ad")
    lines = [
        error_line(*cli("prepare", path, "--out", tmp_path / "prep", "--min-genes", 10)),
        error_line(*cli("predict", small_run, path, "--out", tmp_path / "a.h5ad", "--no-umap")),
    ]
    for line in lines:
        assert "floating-point noise" in line and "np.rint" in line, line
        assert "FPKM" not in line and "normalized (" not in line, line
    assert lines[0].split(": ", 1)[1] == lines[1].split(": ", 1)[1]  # the same advice from both


def test_dense_float16_x_is_read(small_run, small, tmp_path):
    import cellformer
    from cellformer.preparation.prepare import prepare

    half = small.copy()
    half.X = half.X.toarray().astype(np.float16)
    path = _write(half, tmp_path / "half.h5ad")
    prepared = prepare(path, out=tmp_path / "prep", **PREPARE)
    reference = prepare(_write(small, tmp_path / "full.h5ad"), out=tmp_path / "ref", **PREPARE)
    assert np.array_equal(prepared.store.ids, reference.store.ids)
    annotated = cellformer.predict(half[:50].copy(), small_run)
    assert annotated.n_obs == 50


def test_user_layer_is_not_called_the_training_one(cli, small_run, small_h5ad, tmp_path):
    line = error_line(
        *cli("predict", small_run, small_h5ad, "--out", tmp_path / "a.h5ad", "--layer", "counts")
    )
    assert "given with --layer" in line and "trained on" not in line, line


def test_directories_and_files_are_named_for_what_they_are(cli, small_run, small_h5ad, tmp_path):
    folder = tmp_path / "cells.h5ad"
    folder.mkdir()
    line = error_line(*cli("predict", small_run, folder, "--out", tmp_path / "a.h5ad"))
    assert "is a directory" in line and "does not exist" not in line, line
    line = error_line(*cli("predict", small_run, small_h5ad, "--out", folder))
    assert "is a directory" in line, line
    line = error_line(*cli("predict", small_h5ad, small_h5ad, "--out", tmp_path / "a.h5ad"))
    assert "is a file, not a run directory" in line, line


def _old_style(adata, path: Path, fmt: str) -> Path:
    """The layout of anndata < 0.7: obs / var as structured arrays, X with h5sparse attributes."""
    X = adata.X.tocsr() if fmt == "csr" else adata.X.tocsc()
    text = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        group = f.create_group("X")
        group.attrs["h5sparse_format"] = fmt
        group.attrs["h5sparse_shape"] = np.array(X.shape)
        group["data"], group["indices"], group["indptr"] = X.data, X.indices, X.indptr
        # a categorical column: integer codes in obs, the names in uns/<column>_categories
        labels = adata.obs["cell_type"].astype("category")
        obs = list(zip(adata.obs_names, labels.cat.codes.astype(np.int8), strict=True))
        f.create_dataset("obs", data=np.array(obs, dtype=[("index", text), ("cell_type", np.int8)]))
        f.create_dataset(
            "uns/cell_type_categories", data=np.array(labels.cat.categories, dtype=object), dtype=text
        )
        f.create_dataset("var", data=np.array([(g,) for g in adata.var_names], dtype=[("index", text)]))
    return path


@pytest.mark.filterwarnings("ignore:.*(very old version of AnnData|without encoding metadata)")
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_old_style_h5ad_is_prepared_like_its_new_copy(small, small_h5ad, tmp_path, fmt):
    import anndata as ad

    from cellformer.preparation.prepare import prepare

    old = _old_style(small, tmp_path / "old.h5ad", fmt)
    read = ad.read_h5ad(old)  # anndata reads it (and so does predict)
    assert read.obs["cell_type"].astype(str).tolist() == small.obs["cell_type"].astype(str).tolist()
    prepared = prepare(old, out=tmp_path / "old_prep", **PREPARE)
    reference = prepare(small_h5ad, out=tmp_path / "ref", **PREPARE)
    assert np.array_equal(prepared.store.ids, reference.store.ids)
    assert prepared.labels.tolist() == reference.labels.tolist()
    classes = [(d.path / "classes.json").read_text() for d in (prepared, reference)]
    assert classes[0] == classes[1] and "class_1" in classes[0]  # names, not the stored integer codes
