"""``prepare`` on the real datasets in ../shared/data."""

from __future__ import annotations

import numpy as np

from cellformer.data.prepare import prepare
from cellformer.data.prepared import PreparedData


def test_bladder_counts(bladder_path, tmp_path):
    prepared = prepare(bladder_path, out=tmp_path / "bladder", label_key="cell_type", max_genes=64)
    again = PreparedData(tmp_path / "bladder")
    assert again.n_classes == 16 and prepared.unseen == []
    n = len(again.labels)
    rows = np.concatenate(list(again.splits.values()))
    assert sorted(rows.tolist()) == list(range(n))
    assert again.store.lengths.max() == 65
    assert set(np.unique(again.labels[again.splits["test"]])) <= set(range(16))
