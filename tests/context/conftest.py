"""Fixtures: prepared datasets with context tokens (pbmc68k's cell-cycle phase, a synthetic bladder batch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from context_helpers import PBMC


@pytest.fixture(scope="session")
def pbmc_phase(pbmc68k_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """pbmc68k prepared with and without ``obs['phase']`` as a context token (rank and binned)."""
    from cellformer.preparation.prepare import prepare

    base = tmp_path_factory.mktemp("pbmc_phase")
    out = {}
    for name, tokenizer, keys in (
        ("rank", "rank", []),
        ("rank_phase", "rank", ["phase"]),
        ("binned", "binned", []),
        ("binned_phase", "binned", ["phase"]),
    ):
        out[name] = prepare(
            pbmc68k_path, out=base / name, tokenizer=tokenizer, context_keys=keys, **PBMC
        ).path
    return out


@pytest.fixture(scope="session")
def bladder_batch(bladder_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """600 bladder cells with a synthetic ``obs['batch']`` (b0..b2), written to a test copy."""
    import anndata as ad

    adata = ad.read_h5ad(bladder_path)
    rng = np.random.default_rng(0)
    adata = adata[np.sort(rng.choice(adata.n_obs, 600, replace=False))].copy()
    adata.obs["batch"] = rng.choice(["b0", "b1", "b2"], adata.n_obs)
    path = tmp_path_factory.mktemp("bladder_batch") / "bladder_batch.h5ad"
    adata.write_h5ad(path)
    return adata, path
