"""Prediction on several devices (issue 15): ``--devices 2`` on the CPU (two processes, Lightning's DDP
launcher, gloo) gives what one process gives, on a number of cells that two processes cannot split evenly;
bad device options are one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from shared_helpers import error_line

import cellformer
from cellformer.errors import ConfigError

KEY = "cellformer"
N_CELLS = 1001  # odd: two processes get shares of different sizes
CHUNK = 400  # chunks of 400, 400 and 201 cells: three Trainer.predict calls, the last one odd too
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def odd_cells(bladder, tmp_path_factory: pytest.TempPathFactory) -> tuple[ad.AnnData, Path]:
    """The first ``N_CELLS`` bladder cells, in memory and as a file (class_7 included: unknown to the run)."""
    cells = bladder[:N_CELLS].copy()
    path = tmp_path_factory.mktemp("odd") / "cells.h5ad"
    cells.write_h5ad(path)
    return cells, path


def test_two_cpu_processes_predict_what_one_does(odd_cells, withheld_transformer, tmp_path):
    cells, path = odd_cells
    out = tmp_path / "two.h5ad"
    args = [sys.executable, "-m", "cellformer.cli", "-q", "predict", str(withheld_transformer), str(path)]
    args += ["--out", str(out), "--annotations-only", "--no-umap", "--chunk-size", str(CHUNK)]
    args += ["--accelerator", "cpu", "--devices", "2", "--batch-size", "64"]
    result = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("cells annotated") == 1, result.stdout  # the first process reports
    two = ad.read_h5ad(out)
    one = cellformer.predict(cells, withheld_transformer, chunk_size=CHUNK, batch_size=64, accelerator="cpu")
    assert list(two.obs_names) == list(one.obs_names)
    predicted = two.obs[f"{KEY}_prediction"].astype(str).to_numpy()
    assert (predicted == one.obs[f"{KEY}_prediction"].astype(str).to_numpy()).all()
    for key in (f"{KEY}_proba", f"X_{KEY}"):  # probabilities and <CLS> embeddings
        np.testing.assert_allclose(np.asarray(two.obsm[key]), one.obsm[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(  # the default score is centred on its validation median: it crosses 0
        two.obs[f"{KEY}_unknown_score"].to_numpy(),
        one.obs[f"{KEY}_unknown_score"].to_numpy(),
        rtol=1e-5,
        atol=1e-5,
    )
    # the same flags, except for a cell whose score is the threshold itself (a validation cell's, when the
    # quantile falls on one) up to the two runs' float rounding
    threshold = one.uns[KEY]["params"]["unknown"]["threshold"]
    clear = np.abs(one.obs[f"{KEY}_unknown_score"].to_numpy() - threshold) > 1e-5
    assert clear.sum() >= len(clear) - 2
    flags = (two.obs[f"{KEY}_unknown"].to_numpy(), one.obs[f"{KEY}_unknown"].to_numpy())
    assert (flags[0][clear] == flags[1][clear]).all()
    assert two.uns[KEY]["params"]["gene_overlap"] == one.uns[KEY]["params"]["gene_overlap"]
    assert not list(tmp_path.glob("lightning_logs")) and not list(Path.cwd().glob("lightning_logs"))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--devices", "0"], "--devices 0 (devices= in Python) must be a positive number of processes"),
        (["--num-nodes", "-1"], "--num-nodes -1 (num_nodes= in Python) must be a positive number of nodes"),
    ],
)
def test_bad_device_counts_are_one_line_errors(
    cli, odd_cells, withheld_transformer, tmp_path, flags, expected
):
    out = tmp_path / "out.h5ad"
    code, err = cli("predict", withheld_transformer, odd_cells[1], "--out", out, *flags)
    assert expected in error_line(code, err)
    assert not out.exists()
    with pytest.raises(ConfigError, match="must be a positive number"):
        cellformer.predict(odd_cells[0], withheld_transformer, devices=0)


def test_gpu_without_cuda_is_a_one_line_error(cli, odd_cells, withheld_transformer, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, err = cli(
        "predict", withheld_transformer, odd_cells[1], "--out", tmp_path / "o.h5ad", "--accelerator", "gpu"
    )
    line = error_line(code, err)
    assert "--accelerator gpu needs a CUDA GPU" in line and "--accelerator cpu" in line


def test_baselines_predict_in_one_process(cli, odd_cells, withheld_runs, tmp_path):
    code, err = cli(
        "predict", withheld_runs["logreg"], odd_cells[1], "--out", tmp_path / "o.h5ad", "--devices", "2"
    )
    line = error_line(code, err)
    assert "logreg baseline" in line and "drop --devices" in line


@pytest.mark.parametrize(
    ("variables", "primary"),
    [
        ({}, True),
        ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
        ({"LOCAL_RANK": "1"}, False),  # Lightning's own DDP launcher
        ({"NODE_RANK": "1"}, False),
        ({"SLURM_PROCID": "0"}, True),  # one task of an sbatch script
        ({"SLURM_PROCID": "3"}, False),  # srun --ntasks 4: a later task
        ({"RANK": "2"}, False),  # torchrun
    ],
)
def test_the_first_process_is_known_before_lightning_starts(monkeypatch, variables, primary) -> None:
    """Which process reports and writes, from the variables every launcher sets (srun sets no LOCAL_RANK)."""
    from cellformer.text import is_primary_process

    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert is_primary_process() is primary
