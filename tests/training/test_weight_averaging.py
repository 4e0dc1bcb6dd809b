"""An exponential moving average of the weights (``ema_decay``): validated, checkpointed and exported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import TINY, assert_same_run, metrics

import cellformer
from cellformer.config import TrainConfig
from cellformer.errors import ConfigError

EMA = {**TINY, "max_epochs": 3, "ema_decay": 0.9}


def test_the_averaged_weights_are_validated_saved_and_reproducible(
    bladder_prepared: Path, tmp_path: Path
) -> None:
    a = cellformer.train(bladder_prepared, out=tmp_path / "a", **EMA)
    b = cellformer.train(bladder_prepared, out=tmp_path / "b", **EMA)
    assert_same_run(a, b)  # seeded: the same averaged weights and validation numbers
    assert cellformer.load(a).config["train"]["ema_decay"] == 0.9

    best = torch.load(a / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    averaged, raw = best["state_dict"], best["current_model_state"]  # Lightning's EMAWeightAveraging
    exported = load_file(str(a / "model.safetensors"))
    name = "model.gene_embedding.weight"
    assert not torch.equal(averaged[name], raw[name])  # the average is not the last step's weights
    for key, value in exported.items():  # model.safetensors holds the average
        assert torch.equal(value, averaged[f"model.{key}"]), key

    # the same seed without averaging trains the same raw weights but validates other ones
    plain = cellformer.train(bladder_prepared, out=tmp_path / "plain", **{**EMA, "ema_decay": 0.0})
    assert [row["train_loss"] for row in metrics(plain)] == [row["train_loss"] for row in metrics(a)]
    assert [row["val_loss"] for row in metrics(plain)] != [row["val_loss"] for row in metrics(a)]


def test_ema_decay_is_checked() -> None:
    assert TrainConfig(ema_decay=0.99).ema_decay == 0.99
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="ema_decay"):
            TrainConfig(ema_decay=bad)
