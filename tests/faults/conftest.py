"""Fixtures for the fault-injection tests: a 420-cell, 1500-gene subset of the real bladder data (every
5th cell, the 1500 most often expressed genes), prepared once, and a tiny one-epoch transformer on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from faults_helpers import PREPARE, TINY


@pytest.fixture(scope="session")
def bladder_full(bladder_path: Path):
    import anndata as ad

    adata = ad.read_h5ad(bladder_path)
    expressed = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    genes = np.sort(np.argsort(-expressed, kind="stable")[:1500])
    return adata[:, genes].copy()


@pytest.fixture(scope="session")
def small_h5ad(bladder_full, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults_data") / "small.h5ad"
    bladder_full[::5].copy().write_h5ad(path)
    return path


@pytest.fixture(scope="session")
def other_cells(bladder_full):
    """Bladder cells not in ``small_h5ad`` (every 10th, from the 3rd), same genes: a --test file."""
    return bladder_full[2::10].copy()


@pytest.fixture(scope="session")
def small_prepared(small_h5ad: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cellformer.preparation.prepare import prepare

    out = tmp_path_factory.mktemp("faults_prepared") / "prepared"
    prepare(small_h5ad, out=out, **PREPARE)
    return out


@pytest.fixture(scope="session")
def small_run(small_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cellformer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cellformer.train(small_prepared, out=tmp_path_factory.mktemp("faults_runs") / "tiny", **TINY)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def copy_of(tmp_path: Path):
    def make(directory: Path) -> Path:
        target = tmp_path / directory.name
        shutil.copytree(directory, target)
        return target

    return make
