"""``cellformer prepare --time-key`` / ``--previous-layer``: tokens, no leakage, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from timecourse_helpers import SMALL

from cellformer.preparation.prepared import PreparedData
from cellformer.timecourse.ancestors import MAPPING_DIR, previous_for_matrix
from cellformer.timecourse.mapping import AncestorMapping, normalize_rows
from cellformer.tokens import SEP


def _prepare(cli, path, out, *extra) -> PreparedData:
    code, err = cli("prepare", path, "--out", out, "--label-key", "cell_type", *SMALL, *extra)
    assert code == 0, err
    return PreparedData(out)


def _store_rows(prepared: PreparedData, adata) -> np.ndarray:
    """For each store row, the row of ``adata`` it came from."""
    cells = pd.read_csv(prepared.path / "cells.csv.gz")
    return adata.obs_names.get_indexer(cells["obs_name"].astype(str))


def _tokens(prepared: PreparedData) -> list[np.ndarray]:
    return [prepared.store.cell(i)[0] for i in range(len(prepared.store))]


def test_time_key_tokens_come_from_training_ancestors(cli, course_adata, course_path, tmp_path):
    prepared = _prepare(cli, course_path, tmp_path / "p", "--time-key", "time", "--previous", "auto")
    rows = _store_rows(prepared, course_adata)
    X = sp.csr_matrix(course_adata.X[rows], dtype=np.float32)
    times = course_adata.obs["time"].to_numpy()[rows]

    # the reference cells are exactly the training cells (in file order), nothing else
    mapping = AncestorMapping.load(prepared.path / MAPPING_DIR)
    train_file_rows = np.sort(rows[prepared.split_rows("train")])
    expected_profiles = normalize_rows(course_adata.X[train_file_rows])
    assert (mapping.profiles != expected_profiles).nnz == 0

    # stored tokens = tokenizer(current, previous from the saved mapping), for every split
    previous = mapping.transform(X, times)
    expected = prepared.tokenizer().transform(X, previous)
    for i, ids in enumerate(_tokens(prepared)):
        np.testing.assert_array_equal(ids, expected.cell(i))
        n_sep = int((ids == SEP).sum())
        assert n_sep == 1
        if times[i] == 0:  # earliest time point: <CLS> + current block + <SEP>
            assert ids[-1] == SEP
        else:
            assert ids[-1] != SEP
    # predict-time helper gives the same profiles for new cells
    again = previous_for_matrix(X[:7], times[:7], prepared.path / MAPPING_DIR)
    assert (again != previous[:7]).nnz == 0


def test_changing_held_out_cells_changes_no_other_cell(cli, course_adata, course_path, tmp_path):
    first = _prepare(cli, course_path, tmp_path / "a", "--time-key", "time")
    rows = _store_rows(first, course_adata)
    val_file_rows = rows[first.split_rows("val")]
    changed = course_adata.copy()
    X = changed.X.tolil()
    rng = np.random.default_rng(0)
    for r in val_file_rows:  # shuffle each validation cell's counts over the genes (QC unaffected)
        X[r] = np.asarray(X[r].todense())[0][rng.permutation(X.shape[1])]
    changed.X = X.tocsr()
    path = tmp_path / "changed.h5ad"
    changed.write_h5ad(path)
    second = _prepare(cli, path, tmp_path / "b", "--time-key", "time")
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(first.split_rows(name), second.split_rows(name))
    a, b = _tokens(first), _tokens(second)
    others = np.r_[first.split_rows("train"), first.split_rows("test")]
    for i in others:
        np.testing.assert_array_equal(a[i], b[i])
    assert any(not np.array_equal(a[i], b[i]) for i in first.split_rows("val"))


def test_previous_layer_still_works(cli, course_adata, course_path, tmp_path):
    prepared = _prepare(cli, course_path, tmp_path / "p", "--previous-layer", "X_previous")
    rows = _store_rows(prepared, course_adata)
    X = sp.csr_matrix(course_adata.X[rows], dtype=np.float32)
    previous = sp.csr_matrix(course_adata.layers["X_previous"][rows], dtype=np.float32)
    expected = prepared.tokenizer().transform(X, previous)
    for i, ids in enumerate(_tokens(prepared)):
        np.testing.assert_array_equal(ids, expected.cell(i))
    assert not (prepared.path / MAPPING_DIR).exists()


def test_ordered_categorical_time(cli, course_adata, tmp_path):
    adata = course_adata.copy()
    names = ["day0", "day1", "day2", "day3", "day4"]
    adata.obs["stage"] = pd.Categorical(np.array(names)[adata.obs["time"]], categories=names, ordered=True)
    path = tmp_path / "stage.h5ad"
    adata.write_h5ad(path)
    prepared = _prepare(cli, path, tmp_path / "p", "--time-key", "stage")
    mapping = AncestorMapping.load(prepared.path / MAPPING_DIR)
    assert mapping.time_order == {"kind": "ordered", "categories": names}


def _with_obs(adata, tmp_path, **columns):
    adata = adata.copy()
    for name, values in columns.items():
        adata.obs[name] = values
    path = tmp_path / "bad.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ("single", "'single' has only 1 time point"),
        ("gaps", "'gaps' has 3 missing value"),
        ("words", "'words' cannot be ordered"),
        ("absent", "column 'absent' not found in obs"),
    ],
)
def test_bad_time_columns(cli, course_adata, tmp_path, column, message):
    n = course_adata.n_obs
    gaps = course_adata.obs["time"].to_numpy().astype(float)
    gaps[[0, 100, 200]] = np.nan
    path = _with_obs(
        course_adata,
        tmp_path,
        single=np.full(n, 3),
        gaps=gaps,
        words=np.array(["early", "late", "mid"])[np.arange(n) % 3],
    )
    code, err = cli(
        "prepare", path, "--out", tmp_path / "out", "--label-key", "cell_type", *SMALL, "--time-key", column
    )
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_label_that_reveals_the_time_is_refused(cli, course_adata, tmp_path):
    path = _with_obs(course_adata, tmp_path, stage=[f"t{t}" for t in course_adata.obs["time"]])
    code, err = cli(
        "prepare", path, "--out", tmp_path / "o1", "--label-key", "time", *SMALL, "--time-key", "time"
    )
    assert code == 2 and "label_key and time_key are both 'time'" in err and "leak" in err
    code, err = cli(
        "prepare", path, "--out", tmp_path / "o2", "--label-key", "stage", *SMALL, "--time-key", "time"
    )
    assert code == 2 and "are a function of the time column 'time'" in err


def test_option_conflicts(cli, course_path, tmp_path):
    out = tmp_path / "o"
    code, err = cli("prepare", course_path, "--out", out, *SMALL, "--previous", "auto")
    assert code == 2 and "give --time-key" in err
    code, err = cli(
        "prepare", course_path, "--out", out, *SMALL, "--time-key", "time", "--previous-layer", "X_previous"
    )
    assert code == 2 and "not both" in err


def test_previous_layer_with_the_wrong_shape(cli, course_adata, tmp_path):
    import h5py
    from anndata.io import write_elem

    path = tmp_path / "wrong.h5ad"
    course_adata.write_h5ad(path)
    with h5py.File(path, "a") as f:  # anndata refuses such a layer, so write it behind its back
        del f["layers/X_previous"]
        write_elem(f["layers"], "X_previous", sp.csr_matrix((course_adata.n_obs, 7), dtype=np.float32))
    code, err = cli(
        "prepare",
        path,
        "--out",
        tmp_path / "o",
        "--label-key",
        "cell_type",
        *SMALL,
        "--previous-layer",
        "X_previous",
    )
    assert code == 2 and "layer 'X_previous' has shape (300, 7)" in err and err.count("\n") == 1


def test_real_time_course_normalized_input(cli, hsmm_path, tmp_path):
    code, err = cli(
        "prepare",
        hsmm_path,
        "--out",
        tmp_path / "h",
        "--label-key",
        "State",
        "--time-key",
        "Hours",
        "--input-normalized",
        "--max-genes",
        "64",
        "--min-genes",
        "1",
    )
    assert code == 0, err
    prepared = PreparedData(tmp_path / "h")
    mapping = AncestorMapping.load(prepared.path / MAPPING_DIR)
    assert mapping.time_points.tolist() == [0.0, 24.0, 48.0, 72.0] and not mapping.normalize_total
    assert np.isfinite(mapping.embedding).all()
    cells = pd.read_csv(prepared.path / "cells.csv.gz")
    hours = cells["obs_name"].str.extract(r"^T(\d+)")[0].astype(int).to_numpy()  # T0_, T24_, ...
    for i in range(len(prepared.store)):
        ids = prepared.store.cell(i)[0]
        assert (ids[-1] == SEP) == (hours[i] == 0)


def test_separate_test_file_maps_onto_the_training_file(cli, course_adata, tmp_path):
    train_part, test_part = course_adata[::2].copy(), course_adata[1::2].copy()
    train_path, test_path = tmp_path / "train.h5ad", tmp_path / "test.h5ad"
    train_part.write_h5ad(train_path)
    test_part.write_h5ad(test_path)
    prepared = _prepare(cli, train_path, tmp_path / "p", "--test", test_path, "--time-key", "time")
    mapping = AncestorMapping.load(prepared.path / MAPPING_DIR)
    assert mapping.profiles.shape[0] == train_part.n_obs  # all of the training file, none of the test file
    test_rows = np.sort(np.r_[prepared.split_rows("val"), prepared.split_rows("test")])
    X = sp.csr_matrix(test_part.X, dtype=np.float32)
    expected = prepared.tokenizer().transform(X, mapping.transform(X, test_part.obs["time"]))
    for i, row in enumerate(test_rows):
        np.testing.assert_array_equal(prepared.store.cell(int(row))[0], expected.cell(i))
    del test_part.obs["time"]
    test_part.write_h5ad(test_path)
    code, err = cli(
        "prepare", train_path, "--out", tmp_path / "q", *SMALL, "--test", test_path, "--time-key", "time"
    )
    assert code == 2 and "column 'time' not found in obs of" in err and "test.h5ad" in err
