"""GPU training with bf16 autocast (skipped without CUDA), and the ensemble under bf16 autocast anywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import ONE_MODEL_AND_AN_ENSEMBLE, TINY, metrics

import cellformer
from cellformer.preparation.prepared import PreparedData


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@ONE_MODEL_AND_AN_ENSEMBLE
def test_gpu_bf16_training_and_prediction(bladder_prepared: Path, tmp_path: Path, members: int) -> None:
    options = {**TINY, "accelerator": "gpu", "members": members}
    run = cellformer.train(bladder_prepared, out=tmp_path / "gpu", **options)
    model = cellformer.load(run)
    assert model.config["train"]["accelerator"] == "gpu"
    assert float(metrics(run)[-1]["train_loss"]) < float(metrics(run)[0]["train_loss"])
    predictions = model.predict_split(PreparedData(bladder_prepared), "val")
    assert np.isfinite(predictions.logits).all()


def test_an_ensemble_trains_under_bf16_autocast(bladder_prepared: Path, tmp_path: Path) -> None:
    """The GPU path's precision (bf16-mixed) with the default model's members, on whatever device is here:
    on a CPU this is the part of the GPU path the test machine can run."""
    options = {**TINY, "members": 2, "max_epochs": 2, "precision": "bf16-mixed"}
    run = cellformer.train(bladder_prepared, out=tmp_path / "bf16", **options)
    model = cellformer.load(run)
    assert model.config["execution"]["precision"] == "bf16-mixed"
    rows = metrics(run)
    assert all(np.isfinite(float(row["train_loss"])) for row in rows)
    predictions = model.predict_split(PreparedData(bladder_prepared), "val")
    assert predictions.logits.dtype == np.float32 and np.isfinite(predictions.logits).all()
    np.testing.assert_allclose(np.exp(predictions.logits).sum(axis=1), 1.0, atol=1e-4)  # log of the mean
