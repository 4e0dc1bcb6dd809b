"""W&B logging is optional and offline by default: no account, no network, files in the run directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_helpers import TINY

import cellformer


def test_offline_wandb_run_is_written_into_the_run_directory(
    bladder_prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    run = cellformer.train(bladder_prepared, out=tmp_path / "run", wandb=True, **{**TINY, "max_epochs": 2})

    offline_runs = list((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, list((run / "wandb").iterdir())
    logged = list(offline_runs[0].glob("*.wandb"))
    assert logged and logged[0].stat().st_size > 0
    assert (run / "log.csv").read_text().count("\n") == 3  # the CSV log is written as well
