"""Fixtures for the data tests: small synthetic .h5ad files and a CLI runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prep_helpers import make_adata


@pytest.fixture
def write_h5ad(tmp_path: Path) -> Callable:
    """``write_h5ad(adata, name)`` writes ``adata`` under ``tmp_path`` and returns the path."""

    def write(adata, name: str = "cells.h5ad") -> Path:
        path = tmp_path / name
        adata.write_h5ad(path)
        return path

    return write


@pytest.fixture
def counts_h5ad(write_h5ad) -> Path:
    return write_h5ad(make_adata(), "counts.h5ad")
