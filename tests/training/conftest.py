"""Fixtures: a prepared dataset from the real bladder data, and tiny training configurations."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from training_helpers import THREADS, TINY  # noqa: F401


@pytest.fixture(scope="session")
def bladder_prepared(bladder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2100 bladder cells prepared with the defaults (rank tokens, top 128 genes, split 70/15/15)."""
    from cellformer.preparation.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "bladder"
    prepare(bladder_path, out=out, max_genes=128)
    return out


@contextlib.contextmanager
def threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _one_thread():
    # per test, since other code may reset the count (threadpoolctl in prepare restores OpenMP's)
    with threads(THREADS):
        yield


@pytest.fixture(scope="session")
def tiny_run(bladder_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished training run of the tiny model (shared by several tests)."""
    from cellformer.training.api import train

    with threads(THREADS):
        return train(bladder_prepared, out=tmp_path_factory.mktemp("runs") / "tiny", **TINY)
