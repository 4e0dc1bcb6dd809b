"""Multi-process training through Lightning's DDP strategy: 2 CPU processes (gloo)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from training_helpers import ONE_MODEL_AND_AN_ENSEMBLE, SUBPROCESS_ENV, TINY, metrics

import cellformer
from cellformer.preparation.prepared import PreparedData


@ONE_MODEL_AND_AN_ENSEMBLE
def test_ddp_two_cpu_processes(bladder_prepared: Path, tmp_path: Path, members: int) -> None:
    out = tmp_path / "ddp"
    config = {**TINY, "max_epochs": 2, "devices": 2, "strategy": "ddp", "members": members}
    args = [sys.executable, "-m", "cellformer.cli", "-q", "train", str(bladder_prepared), "--out", str(out)]
    for key, value in config.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = subprocess.run(args, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]  # one row per epoch, written by rank 0 only
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    model = cellformer.load(out)
    predictions = model.predict_split(PreparedData(bladder_prepared), "val")
    assert np.isfinite(predictions.logits).all()
    assert model.config["model"]["members"] == members
    if members > 1:  # every member trained, each its own table, from the same SVD start
        tables = [table.weight.detach().numpy() for table in model.model.gene_tables()]
        assert not np.array_equal(tables[0], tables[1])
