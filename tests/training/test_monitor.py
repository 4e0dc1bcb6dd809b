"""``--monitor val_macro_f1``: early stopping and the best checkpoint follow validation macro-F1 (highest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_helpers import TINY, metrics

import cellformer
from cellformer.config import TrainConfig
from cellformer.errors import ConfigError
from cellformer.training.checkpointing import completed_epochs, model_state

# On this run (seed 0, one thread) validation loss is lowest at epoch 4 and macro-F1 highest at epoch 6,
# so keeping the lowest-loss checkpoint would fail the test below.
F1_RUN = {**TINY, "max_epochs": 6, "lr": 3e-2, "patience": 2, "monitor": "val_macro_f1"}


def test_best_checkpoint_is_the_epoch_with_the_best_val_macro_f1(
    bladder_prepared: Path, tmp_path: Path
) -> None:
    run = cellformer.train(bladder_prepared, out=tmp_path / "run", **F1_RUN)
    rows = metrics(run)
    f1 = [float(r["val_macro_f1"]) for r in rows]
    best_epoch = f1.index(max(f1)) + 1  # the first epoch reaching the maximum (improvement is strict)
    assert completed_epochs(run / "checkpoints" / "best.ckpt") == best_epoch, rows
    weights = load_file(str(run / "model.safetensors"))
    best = model_state(run / "checkpoints" / "best.ckpt")
    assert weights.keys() == best.keys() and all(torch.equal(weights[k], best[k]) for k in weights)

    config = json.loads((run / "config.json").read_text())
    assert config["train"]["monitor"] == "val_macro_f1"
    result = config["result"]
    assert result["monitor"] == "val_macro_f1" and "best_val_loss" not in result
    assert result["best_val_macro_f1"] == pytest.approx(max(f1), rel=1e-5)
    # early stopping counts epochs without a higher macro-F1
    if result["stopped_early"]:
        assert len(rows) - best_epoch == F1_RUN["patience"]
    else:
        assert len(rows) == F1_RUN["max_epochs"]


def test_trainer_callbacks_follow_the_monitor(tmp_path: Path) -> None:
    from cellformer.training.trainer import build_trainer

    _, checkpoint, early = build_trainer(tmp_path, TrainConfig(monitor="val_macro_f1"), validate=True)
    assert (checkpoint.monitor, checkpoint.mode) == ("val_macro_f1", "max")
    assert early is not None and (early.monitor, early.mode) == ("val_macro_f1", "max")
    assert TrainConfig().monitor == "val_macro_f1"  # the default (docs/accuracy.md)
    _, checkpoint, early = build_trainer(tmp_path, TrainConfig(monitor="val_loss"), validate=True)
    assert (checkpoint.monitor, checkpoint.mode, early.monitor, early.mode) == ("val_loss", "min") * 2


def test_a_bad_monitor_is_refused(bladder_prepared: Path, tmp_path: Path, capsys) -> None:
    from cellformer.cli import main

    with pytest.raises(ConfigError, match="train monitor must be val_loss or val_macro_f1, got 'val_acc'"):
        TrainConfig(monitor="val_acc")
    with pytest.raises(ConfigError, match="train monitor must be"):  # the API and YAML path
        cellformer.train(bladder_prepared, out=tmp_path / "api", monitor="val_f1")
    with pytest.raises(SystemExit) as exit_info:  # the CLI: argparse lists the choices
        main(["train", str(bladder_prepared), "--out", str(tmp_path / "cli"), "--monitor", "val_f1"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'val_f1' (choose from 'val_loss', 'val_macro_f1')" in capsys.readouterr().err
    assert not (tmp_path / "api").exists() and not (tmp_path / "cli").exists()


def test_keep_last_keeps_the_weights_training_ended_with(bladder_prepared: Path, tmp_path: Path) -> None:
    run = cellformer.train(
        bladder_prepared, out=tmp_path / "run", **{**F1_RUN, "max_epochs": 4, "patience": 0, "keep": "last"}
    )
    rows = metrics(run)
    assert len(rows) == 4
    weights = load_file(str(run / "model.safetensors"))
    last = model_state(run / "checkpoints" / "last.ckpt")
    assert completed_epochs(run / "checkpoints" / "last.ckpt") == 4
    assert weights.keys() == last.keys() and all(torch.equal(weights[k], last[k]) for k in weights)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["keep"] == "last"
    with pytest.raises(ConfigError, match="train keep must be best or last, got 'first'"):
        TrainConfig(keep="first")


def test_max_steps_ends_training_and_the_schedule_early(bladder_prepared: Path, tmp_path: Path) -> None:
    run = cellformer.train(
        bladder_prepared, out=tmp_path / "run", **{**TINY, "max_epochs": 8, "max_steps": 30}
    )
    rows = metrics(run)
    steps_per_epoch = -(-len(np.load(bladder_prepared / "splits.npz")["train"]) // TINY["batch_size"])
    assert len(rows) == -(-30 // steps_per_epoch) < 8  # stopped by the step limit, not the epochs
    # the cosine spans the 30 steps, not 8 epochs: the last epoch ends near lr x min_lr_fraction
    assert float(rows[-1]["lr"]) < 0.15 * TINY["lr"]
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 30
    with pytest.raises(ConfigError, match="train max_steps must be positive"):
        TrainConfig(max_steps=0)
