"""GPU training with bf16 autocast (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import TINY, metrics

import cellformer
from cellformer.preparation.prepared import PreparedData


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_training_and_prediction(bladder_prepared: Path, tmp_path: Path) -> None:
    run = cellformer.train(bladder_prepared, out=tmp_path / "gpu", **{**TINY, "accelerator": "gpu"})
    config = cellformer.load(run).config
    assert config["train"]["accelerator"] == "gpu"
    assert float(metrics(run)[-1]["train_loss"]) < float(metrics(run)[0]["train_loss"])
    predictions = cellformer.load(run).predict_split(PreparedData(bladder_prepared), "val")
    assert np.isfinite(predictions.logits).all()
