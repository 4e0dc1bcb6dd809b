"""Training on the real bladder data: it learns, it is reproducible, the run directory is complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score
from training_helpers import TINY, assert_same_run, metrics

import cellformer
from cellformer.preparation.prepared import PreparedData
from cellformer.training.checkpointing import model_state

# Measured: the tiny model (1 layer, d_model 32, 64 tokens) reaches val macro-F1 0.37-0.42 after 8 epochs
# on the 16 unbalanced bladder classes (chance ~0.06). The threshold leaves a wide margin.
MIN_VAL_MACRO_F1 = 0.2


def test_tiny_model_learns(tiny_run: Path) -> None:
    rows = metrics(tiny_run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, TINY["max_epochs"] + 1))
    best = max(float(r["val_macro_f1"]) for r in rows)
    assert best > MIN_VAL_MACRO_F1, rows
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    # warm-up then cosine decay: the learning rate falls after the peak
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[-1] < max(lrs)


def test_run_directory_is_complete(tiny_run: Path, bladder_prepared: Path) -> None:
    for name in (
        "config.json",
        "vocab.json",
        "classes.json",
        "tokenizer",
        "model.safetensors",
        "log.csv",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (tiny_run / name).exists(), name
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["kind"] == "transformer" and config["status"] == "finished"
    assert config["seed"] == 0 and config["train"]["max_epochs"] == TINY["max_epochs"]
    prepared = PreparedData(bladder_prepared)
    assert config["model"]["vocab_size"] == prepared.vocab_size
    assert config["model"]["n_classes"] == prepared.n_classes
    assert config["model"]["n_values"] == prepared.meta["n_values"] > 0  # default tokens carry values
    assert config["prepared"]["meta"]["format"] == "cellformer-prepared"
    assert len(config["data_fingerprint"]) == 64 and "torch" in config["versions"]
    assert (tiny_run / "vocab.json").read_text() == (bladder_prepared / "vocab.json").read_text()


def test_same_seed_gives_identical_runs(tiny_run: Path, bladder_prepared: Path, tmp_path: Path) -> None:
    again = cellformer.train(bladder_prepared, out=tmp_path / "again", **TINY)
    assert_same_run(tiny_run, again)


def test_different_seed_gives_a_different_run(bladder_prepared: Path, tmp_path: Path) -> None:
    quick = {**TINY, "max_epochs": 1}
    a = cellformer.train(bladder_prepared, out=tmp_path / "a", **quick)
    b = cellformer.train(bladder_prepared, out=tmp_path / "b", **{**quick, "seed": 1})
    assert metrics(a) != metrics(b)


def test_save_load_gives_identical_predictions(tiny_run: Path, bladder_prepared: Path) -> None:
    import torch

    prepared = PreparedData(bladder_prepared)
    run = cellformer.load(tiny_run)
    assert run.kind == "transformer" and run.classes == prepared.classes
    predictions = run.predict_split(prepared, "val")
    rows = prepared.split_rows("val")
    assert predictions.logits.shape == (len(rows), prepared.n_classes)
    assert predictions.embeddings.shape == (len(rows), TINY["d_model"])
    np.testing.assert_array_equal(predictions.rows, rows)

    # the saved weights are the best checkpoint's, and a second load predicts the same
    saved = run.model.state_dict()
    for name, tensor in model_state(tiny_run / "checkpoints" / "best.ckpt").items():
        assert torch.equal(saved[name], tensor), name
    again = cellformer.load(tiny_run).predict_split(prepared, "val")
    np.testing.assert_array_equal(again.logits, predictions.logits)

    # predicting the same cells from tokens (the path for new AnnData) gives the same outputs
    from_tokens = run.predict_tokens(prepared.store.subset(rows))
    np.testing.assert_allclose(from_tokens.logits, predictions.logits, rtol=1e-5, atol=1e-5)

    # the validation macro-F1 recomputed from predictions matches the log at the best epoch (the run
    # monitors val_macro_f1 and keeps the first epoch that reached its maximum)
    labels = np.asarray(prepared.labels)[rows]
    f1 = f1_score(labels, predictions.logits.argmax(1), average="macro")
    log = metrics(tiny_run)
    assert run.config["train"]["monitor"] == "val_macro_f1"
    best = max(log, key=lambda r: float(r["val_macro_f1"]))
    assert f1 == pytest.approx(float(best["val_macro_f1"]), abs=1e-4)
