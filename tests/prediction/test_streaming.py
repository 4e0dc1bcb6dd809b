"""Streaming prediction from a file (issue 15): chunked reading equals the in-memory path, annotations-only
output, --shard pieces merged equal one whole run, and memory bounded by the chunk, not the file."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from shared_helpers import error_line

import cellformer
from cellformer.cli import main
from cellformer.errors import ConfigError, InputError
from cellformer.prediction import predict_file
from cellformer.prediction.writing import merge_annotations, shard_rows

KEY = "cellformer"
COLUMNS = [f"{KEY}_{n}" for n in ("prediction", "confidence", "unknown", "unknown_score")]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_annotations(a: ad.AnnData, b: ad.AnnData) -> None:
    assert list(a.obs_names) == list(b.obs_names)
    assert (a.obs[f"{KEY}_prediction"].astype(str).to_numpy() == b.obs[f"{KEY}_prediction"].astype(str)).all()
    assert (a.obs[f"{KEY}_unknown"].to_numpy() == b.obs[f"{KEY}_unknown"].to_numpy()).all()
    for column in (f"{KEY}_confidence", f"{KEY}_unknown_score"):
        np.testing.assert_allclose(a.obs[column].to_numpy(), b.obs[column].to_numpy(), rtol=1e-4, atol=1e-5)
    for key in (f"{KEY}_proba", f"X_{KEY}"):
        np.testing.assert_allclose(np.asarray(a.obsm[key]), np.asarray(b.obsm[key]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("kind", "chunk_size"), [("logreg", 333), ("logreg", 2099), ("transformer", 700)])
def test_streaming_equals_in_memory(
    kind, chunk_size, bladder, bladder_path, withheld_runs, withheld_transformer, tmp_path
):
    run = withheld_transformer if kind == "transformer" else withheld_runs[kind]
    before = _digest(bladder_path)
    written = predict_file(
        run, bladder_path, out=tmp_path / "a.h5ad", chunk_size=chunk_size, annotations_only=True, umap=False
    )
    assert set(written) == {"h5ad", "csv"}
    streamed = ad.read_h5ad(written["h5ad"])
    in_memory = cellformer.predict(bladder, run)
    assert_same_annotations(streamed, in_memory)
    assert list(streamed.obs.columns) == COLUMNS and streamed.n_vars == 0  # annotations only
    assert (
        streamed.uns[KEY]["params"]["unknown"]["threshold"]
        == in_memory.uns[KEY]["params"]["unknown"]["threshold"]
    )
    table = pd.read_csv(written["csv"], index_col="cell")
    assert list(table.index) == list(bladder.obs_names)
    assert (
        table["prediction"].astype(str).to_numpy() == in_memory.obs[f"{KEY}_prediction"].astype(str)
    ).all()
    assert (table["unknown"].to_numpy() == in_memory.obs[f"{KEY}_unknown"].to_numpy()).all()
    assert _digest(bladder_path) == before  # the input is never modified


def test_annotated_copy_keeps_the_input_and_adds_the_annotations(
    bladder, bladder_path, withheld_runs, tmp_path
):
    run = withheld_runs["logreg"]
    out = predict_file(run, bladder_path, out=tmp_path / "copy.h5ad", chunk_size=500, umap=False)["h5ad"]
    copy = ad.read_h5ad(out)
    assert (copy.X != bladder.X).nnz == 0 and list(copy.var_names) == list(bladder.var_names)
    assert list(copy.obs.columns) == [*bladder.obs.columns, *COLUMNS]
    assert (copy.obs["cell_type"] == bladder.obs["cell_type"]).all()
    assert copy.uns["source"] == bladder.uns["source"]
    assert_same_annotations(copy, cellformer.predict(bladder, run))
    # predicting into the copy again replaces the annotations
    again = predict_file(run, out, out=tmp_path / "again.h5ad", umap=False)["h5ad"]
    assert list(ad.read_h5ad(again).obs.columns) == [*bladder.obs.columns, *COLUMNS]


def test_shards_merged_equal_one_whole_run(bladder_path, withheld_runs, withheld_prepared, tmp_path):
    run = withheld_runs["logreg"]
    whole = ad.read_h5ad(
        predict_file(run, bladder_path, out=tmp_path / "whole.h5ad", annotations_only=True)["h5ad"]
    )
    pieces = []
    for k in (3, 1, 2):  # in any order
        code = main(
            [
                "-q",
                "predict",
                str(run),
                str(bladder_path),
                "--out",
                str(tmp_path / f"piece{k}.h5ad"),
                "--shard",
                f"{k}/3",
                "--chunk-size",
                "250",
            ]
        )
        assert code == 0
        piece = ad.read_h5ad(tmp_path / f"piece{k}.h5ad")
        start, stop = shard_rows(k, 3, 2100)
        assert list(piece.obs_names) == list(whole.obs_names[start:stop])
        pieces.append(tmp_path / f"piece{k}.h5ad")
    assert main(["-q", "merge-annotations", *map(str, pieces), "--out", str(tmp_path / "merged.h5ad")]) == 0
    merged = ad.read_h5ad(tmp_path / "merged.h5ad")
    assert_same_annotations(merged, whole)
    a, b = merged.uns[KEY]["params"]["unknown"], whole.uns[KEY]["params"]["unknown"]
    assert a["flagged_fraction"] == pytest.approx(b["flagged_fraction"])
    # the file holds the run's training cells: counted in each piece, summed by the merge
    hashes = np.load(withheld_prepared / "cell_hashes.npy")
    splits = np.load(withheld_prepared / "splits.npz")
    expected = int(np.isin(hashes, hashes[splits["train"]]).sum())  # copies of training cells included
    assert expected >= len(splits["train"]) > 1000
    assert (
        merged.uns[KEY]["params"]["n_training_cells"]
        == whole.uns[KEY]["params"]["n_training_cells"]
        == expected
    )
    for q, value in b["score_quantiles"].items():
        assert a["score_quantiles"][q] == pytest.approx(value, rel=1e-5)
    assert list(merged.obs[f"{KEY}_prediction"].cat.categories) == list(
        whole.obs[f"{KEY}_prediction"].cat.categories
    )
    assert pd.read_csv(tmp_path / "merged.csv").shape == (2100, 5)

    # bad merges: one line each, nothing written, the pieces untouched
    digests = [_digest(p) for p in pieces]
    with pytest.raises(InputError, match="pieces 2/3 are missing"):
        merge_annotations([pieces[0], pieces[1]], out=tmp_path / "m1.h5ad")
    with pytest.raises(InputError, match="both piece 1/3"):
        merge_annotations([*pieces, pieces[1]], out=tmp_path / "m2.h5ad")
    other = predict_file(
        withheld_runs["mlp"], bladder_path, out=tmp_path / "other.h5ad", shard="2/3", umap=False
    )["h5ad"]
    with pytest.raises(InputError, match="different runs"):
        merge_annotations([pieces[0], pieces[1], other], out=tmp_path / "m3.h5ad")
    with pytest.raises(InputError, match="not a piece"):
        merge_annotations([tmp_path / "whole.h5ad"], out=tmp_path / "m4.h5ad")
    with pytest.raises(ConfigError, match="is one of the pieces"):
        merge_annotations(pieces, out=pieces[0], overwrite=True)
    assert not any((tmp_path / f"m{i}.h5ad").exists() for i in range(1, 5))
    assert [_digest(p) for p in pieces] == digests


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "3/2"], "--shard 3/2: the piece K must be between 1"),
        (["--shard", "two"], "is not K/N"),
    ],
)
def test_bad_options_are_one_line(args, message, bladder_path, withheld_runs, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    code = main(["predict", str(withheld_runs["logreg"]), str(bladder_path), "--out", str(out), *args])
    assert code != 0 and not out.exists()
    line = error_line(code, capsys.readouterr().err)
    assert message in line, line


def test_chunk_size_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(tmp_path), str(tmp_path / "x.h5ad"), "--out", "y.h5ad", "--chunk-size", "0"])
    assert exc.value.code == 2 and "expected a positive number of cells" in capsys.readouterr().err


def test_output_equal_to_the_input_is_refused(bladder_path, withheld_runs, tmp_path, capsys):
    source = tmp_path / "cells.h5ad"
    source.write_bytes(bladder_path.read_bytes())
    before = _digest(source)
    for extra in ([], ["--annotations-only"]):
        code = main(
            [
                "predict",
                str(withheld_runs["logreg"]),
                str(source),
                "--out",
                str(source),
                "--overwrite",
                *extra,
            ]
        )
        assert "never overwrites its input" in error_line(code, capsys.readouterr().err)
    assert _digest(source) == before


def _dense_resample(source: Path, out: Path, n_cells: int) -> int:
    """An h5ad of ``n_cells`` cells drawn from ``source``, its X stored dense and gzip-compressed (small on
    disk, ``n_cells x genes x 4`` bytes in memory), written chunk by chunk. Returns the dense X's bytes."""
    import h5py
    from anndata.io import write_elem

    cells = ad.read_h5ad(source)
    rows = np.random.default_rng(0).integers(0, cells.n_obs, n_cells)
    obs = cells.obs.iloc[rows].copy()
    obs.index = [f"cell{i}" for i in range(n_cells)]
    X = cells.X.tocsr()
    with h5py.File(out, "w") as file:
        file.attrs["encoding-type"], file.attrs["encoding-version"] = "anndata", "0.1.0"
        write_elem(file, "obs", obs)
        write_elem(file, "var", cells.var)
        shape = (n_cells, cells.n_vars)
        data = file.create_dataset(
            "X", shape=shape, dtype="float32", chunks=(64, shape[1]), compression="gzip", compression_opts=1
        )
        data.attrs["encoding-type"], data.attrs["encoding-version"] = "array", "0.2.0"
        for start in range(0, n_cells, 1024):
            data[start : start + 1024] = X[rows[start : start + 1024]].toarray()
        for key in ("obsm", "varm", "layers", "obsp", "varp", "uns"):
            write_elem(file, key, {})
    return n_cells * cells.n_vars * 4


LIMITED = textwrap.dedent(
    """
    import resource, sys
    import anndata as ad
    from cellformer.prediction import predict_file
    resource.setrlimit(resource.RLIMIT_DATA, ({limit}, {limit}))
    if sys.argv[1] == "whole":
        try:
            ad.read_h5ad(sys.argv[2])
        except MemoryError:
            print("MemoryError")
        sys.exit(0)
    predict_file(sys.argv[3], sys.argv[2], out=sys.argv[4], chunk_size=1000, annotations_only=True, umap=False)
    print("done")
    """
)


def test_a_file_larger_than_the_memory_limit_is_annotated(bladder_path, withheld_runs, tmp_path):
    big = tmp_path / "big.h5ad"
    dense_bytes = _dense_resample(bladder_path, big, 20_000)
    limit = 1_200 * 2**20  # of data memory (heap and anonymous maps): less than X alone
    assert dense_bytes > 1.3 * limit and big.stat().st_size < 0.1 * dense_bytes
    script = tmp_path / "limited.py"
    script.write_text(LIMITED.format(limit=limit))
    out = tmp_path / "annotations.h5ad"
    env_run = [sys.executable, str(script)]
    whole = subprocess.run([*env_run, "whole", str(big)], capture_output=True, text=True, timeout=300)
    assert "MemoryError" in whole.stdout + whole.stderr, whole.stderr[-2000:]  # the limit binds
    result = subprocess.run(
        [*env_run, "stream", str(big), str(withheld_runs["logreg"]), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-3000:]
    annotations = ad.read_h5ad(out)
    assert annotations.n_obs == 20_000
    # the same cells in memory get the same labels
    head = ad.read_h5ad(big, backed="r")[:500].to_memory()
    expected = cellformer.predict(head, withheld_runs["logreg"])
    assert (
        annotations.obs[f"{KEY}_prediction"][:500].astype(str).to_numpy()
        == expected.obs[f"{KEY}_prediction"].astype(str).to_numpy()
    ).all()
