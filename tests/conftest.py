"""Shared fixtures: the real datasets in ../shared/data (read in place, never copied)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(scope="session")
def bladder_path() -> Path:
    """mouse_bladder_2100.h5ad: 2100 cells x 20670 genes, raw UMI counts, 16 unbalanced classes."""
    return shared_file("mouse_bladder_2100.h5ad")


@pytest.fixture(scope="session")
def pbmc68k_path() -> Path:
    """pbmc68k_reduced.h5ad: 700 cells x 765 genes, log1p-normalized, labels in cell_type/bulk_labels."""
    return shared_file("pbmc68k_reduced.h5ad")


@pytest.fixture(scope="session")
def hsmm_path() -> Path:
    """hsmm_timecourse.h5ad: 271 cells x 47192 genes, FPKM, time in obs['Hours']."""
    return shared_file("hsmm_timecourse.h5ad")


@pytest.fixture(scope="session")
def kidney_path() -> Path:
    """human_kidney_5685_top2000.h5ad: 5685 cells x 2000 HVGs (anonymous), raw UMI counts, 11 classes."""
    return shared_file("human_kidney_5685_top2000.h5ad")


@pytest.fixture(scope="session")
def pbmc3k_path() -> Path:
    """pbmc3k_unlabelled.h5ad: 2700 cells, raw counts, no labels."""
    return shared_file("pbmc3k_unlabelled.h5ad")


@pytest.fixture
def cli(capsys) -> Callable:
    """``cli(*args) -> (exit code, stderr)`` running ``cellformer`` in-process."""
    from cellformer.cli import main

    def run(*args: str) -> tuple[int, str]:
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err

    return run
