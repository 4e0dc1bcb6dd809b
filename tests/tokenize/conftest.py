"""Fixtures for the tokenizer tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def bladder_counts(bladder_path):
    """The mouse bladder counts as CSR float32 (2100 x 20670), read once."""
    import anndata as ad
    import scipy.sparse as sp

    adata = ad.read_h5ad(bladder_path)
    return sp.csr_matrix(adata.X, dtype=np.float32)
