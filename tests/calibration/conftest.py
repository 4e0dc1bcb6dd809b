"""Fixtures: a tiny transformer and a logreg run on pbmc68k_reduced (700 cells), CD19+ B cells withheld.

The runs only test the plumbing of the unknown score (what is written, that flag and score agree, that
the threshold reproduces its false-positive target); how well the score separates new types is
``bench/unknown.py``'s job.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from shared_helpers import TINY as _TINY

WITHHELD = "CD19+ B"
TINY = {**_TINY, "max_epochs": 3, "members": 2}  # fewer epochs: plumbing; two members: the default score


@pytest.fixture(scope="session")
def pbmc68k(pbmc68k_path: Path):
    import anndata as ad

    return ad.read_h5ad(pbmc68k_path)


@pytest.fixture(scope="session")
def unknown_prepared(pbmc68k, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pbmc68k without ``WITHHELD``, prepared (rank tokens, top 64 genes)."""
    from cellformer.preparation.prepare import prepare

    base = tmp_path_factory.mktemp("unknown")
    source = base / "pbmc68k_without_b.h5ad"
    pbmc68k[pbmc68k.obs["cell_type"] != WITHHELD].copy().write_h5ad(source)
    prepare(source, out=base / "prepared", max_genes=64, input_normalized=True)
    return base / "prepared"


@pytest.fixture(scope="session")
def unknown_runs(unknown_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"transformer": run, "logreg": run}`` on :func:`unknown_prepared`."""
    import torch

    import cellformer

    base = tmp_path_factory.mktemp("unknown_runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        transformer = cellformer.train(unknown_prepared, out=base / "transformer", seed=0, **TINY)
    finally:
        torch.set_num_threads(threads)
    logreg = cellformer.baseline(unknown_prepared, method="logreg", out=base / "logreg")
    return {"transformer": transformer, "logreg": logreg}


@pytest.fixture(scope="session")
def query(pbmc68k, unknown_prepared: Path):
    """All withheld cells plus the prepared test cells (known types), as an AnnData."""
    import numpy as np
    import pandas as pd

    cells = pd.read_csv(unknown_prepared / "cells.csv.gz")
    test = cells.loc[cells["split"] == "test", "obs_name"].astype(str)
    names = pd.Index(pbmc68k.obs_names)
    rows = np.r_[np.flatnonzero(pbmc68k.obs["cell_type"] == WITHHELD), names.get_indexer(test)]
    return pbmc68k[rows].copy()


@pytest.fixture(scope="session")
def validation_cells(pbmc68k, unknown_prepared: Path):
    """The prepared validation cells, as an AnnData (to check the threshold's false-positive rate)."""
    import pandas as pd

    cells = pd.read_csv(unknown_prepared / "cells.csv.gz")
    val = cells.loc[cells["split"] == "val", "obs_name"].astype(str)
    return pbmc68k[pd.Index(pbmc68k.obs_names).get_indexer(val)].copy()


@pytest.fixture(scope="session")
def bladder_counts_for_scores(bladder_path: Path):
    """The first 1,200 mouse bladder cells as CSR counts (20,670 genes: more than the 10,000 HVG cap)."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    return sp.csr_matrix(ad.read_h5ad(bladder_path).X[:1200], dtype=np.float32)
