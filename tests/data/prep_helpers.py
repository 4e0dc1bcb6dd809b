"""Small synthetic AnnData builders and helpers shared by the data tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def make_adata(
    n_cells: int = 90,
    n_genes: int = 40,
    n_classes: int = 3,
    seed: int = 0,
    gene_prefix: str = "G",
):
    """Poisson counts whose rates depend on the class, as an in-memory AnnData (CSR int32)."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    classes = np.arange(n_cells) % n_classes
    rates = rng.gamma(0.8, 3.0, size=(n_classes, n_genes))
    X = rng.poisson(rates[classes]).astype(np.int32)
    X[:, 0] += 1  # every cell has counts
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"type_{c}" for c in classes]), "class_id": classes},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"{gene_prefix}{j}" for j in range(n_genes)])
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=var)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# QC thresholds that suit the tiny synthetic files
SMALL = ["--min-genes", "1", "--min-cells", "1", "--max-genes", "16"]
SMALL_OPTIONS = {"min_genes": 1, "min_cells": 1, "max_genes": 16}
