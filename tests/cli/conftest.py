"""Fixtures for the command-line UX tests: a small prepared dataset."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_prepared(bladder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2100 bladder cells, rank tokens of the top 32 genes (default QC and splits)."""
    from cellformer.preparation.prepare import prepare

    out = tmp_path_factory.mktemp("cli") / "bladder"
    prepare(bladder_path, out=out, max_genes=32)
    return out
