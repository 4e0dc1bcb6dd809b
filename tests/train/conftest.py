"""Fixtures: a prepared dataset from the real bladder data, and tiny training configurations."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

# Training tests use one thread: on a shared 2-core machine more threads oversubscribe badly, and
# the resume test compares an in-process run with a subprocess one (same thread count, same numbers).
THREADS = 1
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}

# A model small enough that a few epochs on ~1500 cells take seconds on a 2-core CPU.
TINY = dict(
    n_layers=1,
    d_model=32,
    n_heads=2,
    ff_hidden=64,
    head_hidden=32,
    dropout=0.1,
    max_length=64,
    batch_size=64,
    max_epochs=8,
    lr=1e-2,
    warmup_fraction=0.1,
    progress_bar=False,
)


@pytest.fixture(scope="session")
def bladder_prepared(bladder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2100 bladder cells prepared with the defaults (rank tokens, top 128 genes, split 70/15/15)."""
    from cellformer.data.prepare import prepare

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
    from cellformer.train.api import train

    with threads(THREADS):
        return train(bladder_prepared, out=tmp_path_factory.mktemp("runs") / "tiny", **TINY)
