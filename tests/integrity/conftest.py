"""Fixtures for the integrity and leakage tests: pbmc68k_reduced (700 real cells) prepared once, a
logistic-regression baseline and a tiny one-epoch transformer trained on it. Tests that damage a
directory damage a copy of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from integrity_helpers import PREPARE, TINY


@pytest.fixture(scope="session")
def prepared(pbmc68k_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cellformer.preparation.prepare import prepare

    out = tmp_path_factory.mktemp("integrity") / "prepared"
    prepare(pbmc68k_path, out=out, **PREPARE)
    return out


@pytest.fixture(scope="session")
def logreg_run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cellformer

    return cellformer.baseline(prepared, method="logreg", out=tmp_path_factory.mktemp("runs") / "logreg")


@pytest.fixture(scope="session")
def tiny_run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    import cellformer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cellformer.train(prepared, out=tmp_path_factory.mktemp("runs") / "tiny", **TINY)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def copy_of(tmp_path: Path):
    """``copy_of(directory, manifest=True)``: a private copy to damage (``manifest=False``: without
    ``manifest.json``, as another cellformer version or an interrupted write would leave it)."""

    def make(directory: Path, manifest: bool = True) -> Path:
        target = tmp_path / directory.name
        shutil.copytree(directory, target)
        if not manifest:
            (target / "manifest.json").unlink(missing_ok=True)
        return target

    return make
