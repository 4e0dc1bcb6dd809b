"""The masked-gene objective (cellformer.training.masked_genes) on real bladder tokens."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import TINY, assert_same_run, token_batch

import cellformer
from cellformer.config import ModelConfig, TrainConfig
from cellformer.errors import ConfigError
from cellformer.model import CellTransformer
from cellformer.preparation.prepared import PreparedData
from cellformer.tokens import CLS, MASK, N_SPECIAL, PAD
from cellformer.training.masked_genes import GeneMasking, MaskedGeneHead, masked_gene_loss


def test_masking_hides_only_gene_tokens_and_is_seeded(bladder_prepared: Path) -> None:
    batch = token_batch(PreparedData(bladder_prepared))
    before = {k: v.clone() for k, v in batch.items()}
    masking = GeneMasking(0.15, 10**6, seed=3)
    out, hidden, targets = masking(batch, step=5)
    for key, value in before.items():  # the input batch is not modified
        assert torch.equal(batch[key], value)
    assert torch.equal(out["ids"] == MASK, hidden)
    assert torch.equal(targets, before["ids"][hidden])  # the targets are the hidden genes
    assert (targets >= N_SPECIAL).all()
    assert torch.equal(out["padding_mask"], before["padding_mask"])  # masked tokens are attended to
    assert (out["ids"][:, 0] == CLS).all() and not hidden[before["ids"] == PAD].any()
    share = hidden.sum().item() / (before["ids"] >= N_SPECIAL).sum().item()
    assert 0.11 < share < 0.19
    assert ((out["ids"] >= N_SPECIAL).sum(dim=1) >= 1).all()  # every cell keeps a visible gene
    again, hidden_again, _ = masking(batch, step=5)
    assert torch.equal(again["ids"], out["ids"]) and torch.equal(hidden_again, hidden)
    assert not torch.equal(masking(batch, step=6)[1], hidden)
    assert not torch.equal(masking(batch, step=5, rank=1)[1], hidden)


def test_masked_gene_loss_falls_on_a_tiny_model(bladder_prepared: Path) -> None:
    prepared = PreparedData(bladder_prepared)
    batch = token_batch(prepared, n=256)
    config = ModelConfig(
        n_layers=1,
        d_model=32,
        n_heads=2,
        max_length=64,
        vocab_size=prepared.vocab_size,
        n_classes=16,
        n_values=0,
    )
    torch.manual_seed(0)
    model = CellTransformer(config)
    head = MaskedGeneHead(config.d_model, config.vocab_size)
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=3e-3)
    masking = GeneMasking(0.15, config.vocab_size, seed=0)
    losses = []
    for step in range(60):
        masked, hidden, targets = masking(batch, step)
        states = model.encode(masked["ids"], masked["padding_mask"])
        loss = masked_gene_loss(head, states, hidden, targets, model.gene_embedding.weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(np.log(config.vocab_size - N_SPECIAL), rel=0.05)  # uniform at start
    assert np.mean(losses[-10:]) < losses[0] - 1.0


def test_nothing_hidden_gives_zero_loss_with_gradient() -> None:
    head = MaskedGeneHead(8, N_SPECIAL + 5)
    states = torch.randn(2, 3, 8, requires_grad=True)
    table = torch.randn(N_SPECIAL + 5, 8)
    loss = masked_gene_loss(
        head, states, torch.zeros(2, 3, dtype=torch.bool), torch.empty(0, dtype=torch.long), table
    )
    loss.backward()
    assert loss.item() == 0.0 and states.grad is not None


def test_training_with_the_auxiliary_loss_is_deterministic_and_logged(
    bladder_prepared: Path, tmp_path: Path
) -> None:
    options = {**TINY, "max_epochs": 2, "masked_gene_weight": 1.0}
    a = cellformer.train(bladder_prepared, out=tmp_path / "a", **options)
    b = cellformer.train(bladder_prepared, out=tmp_path / "b", **options)
    assert_same_run(a, b)
    with open(a / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    masked = [float(row["train_masked_gene_loss"]) for row in rows]
    assert len(masked) == 2 and all(0 < value < np.log(20000) for value in masked)
    assert cellformer.load(a).config["train"]["masked_gene_weight"] == 1.0
    # the head is training-only: the exported model has exactly the classifier's weights
    from safetensors.torch import load_file

    assert not any("masked" in name for name in load_file(str(a / "model.safetensors")))
    plain = cellformer.train(
        bladder_prepared, out=tmp_path / "plain", **{**options, "masked_gene_weight": 0.0}
    )
    with open(plain / "log.csv", newline="") as handle:
        assert all(row["train_masked_gene_loss"] == "" for row in csv.DictReader(handle))


def test_masked_gene_options_are_checked() -> None:
    assert TrainConfig(masked_gene_weight=0.5, masked_gene_fraction=0.2).masked_gene_fraction == 0.2
    with pytest.raises(ConfigError, match="masked_gene_weight"):
        TrainConfig(masked_gene_weight=-1.0)
    with pytest.raises(ConfigError, match="masked_gene_fraction"):
        TrainConfig(masked_gene_fraction=1.0)
