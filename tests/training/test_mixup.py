"""Token-set mixup: cells exchange gene tokens, labels are mixed in proportion, draws are seeded.
Real data: the bladder cells prepared by the session fixture (rank tokens)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from training_helpers import TINY, assert_same_run, token_batch

import cellformer
from cellformer.config import TrainConfig
from cellformer.errors import ConfigError
from cellformer.preparation.prepared import PreparedData
from cellformer.tokens import CLS, N_SPECIAL, PAD, SEP
from cellformer.training.mixup import TokenSetMixup
from cellformer.training.module import soft_cross_entropy


def _gene_sets(ids: torch.Tensor) -> list[set[int]]:
    return [{int(t) for t in row if t >= N_SPECIAL} for row in ids]


def test_mixup_takes_genes_from_the_partner_and_mixes_labels(bladder_prepared: Path) -> None:
    prepared = PreparedData(bladder_prepared)
    batch = token_batch(prepared)
    before = {k: v.clone() for k, v in batch.items()}
    n_classes = prepared.n_classes
    mixup = TokenSetMixup(1.0, int(batch["ids"].max()) + 1, n_classes, seed=3)
    out, targets = mixup(batch, step=5)
    for key, value in before.items():  # the input batch is not modified
        assert torch.equal(batch[key], value)
    assert out["ids"].shape == batch["ids"].shape
    assert torch.equal(out["padding_mask"], out["ids"] == PAD)
    assert (out["ids"][:, 0] == CLS).all()
    own, mixed = _gene_sets(batch["ids"]), _gene_sets(out["ids"])
    union = set().union(*own)
    mixed_cells = 0
    for i, genes in enumerate(mixed):
        row = out["ids"][i][out["ids"][i] >= N_SPECIAL]
        assert len(row) == len(genes)  # no gene twice
        assert genes <= union  # only genes of the batch's cells
        from_self = len(genes & own[i])
        share = from_self / len(genes)
        label = int(batch["label"][i])
        assert targets[i].sum() == pytest.approx(1.0)
        assert targets[i, label] >= share - 1e-6  # i's own share (more if the partner has i's class)
        mixed_cells += share < 1
    assert mixed_cells > len(mixed) // 2  # Beta(1, 1): most cells take some of a partner's genes
    again, again_targets = mixup(batch, step=5)
    assert torch.equal(again["ids"], out["ids"]) and torch.equal(again_targets, targets)  # seeded
    assert not torch.equal(mixup(batch, step=6)[0]["ids"], out["ids"])
    assert not torch.equal(mixup(batch, step=5, rank=1)[0]["ids"], out["ids"])


def test_mixup_keeps_the_previous_block_context_and_values_aligned() -> None:
    vocab_size = N_SPECIAL + 40  # ids 44.. are context tokens
    ids = torch.tensor(
        [
            [CLS, 44, 5, 6, 7, 8, SEP, 9, 10, PAD],
            [CLS, 45, 11, 12, 13, 14, SEP, 15, PAD, PAD],
        ]
    )
    values = torch.where(ids == PAD, 0, ids % 7 + 1)
    batch = {"ids": ids, "padding_mask": ids == PAD, "values": values, "label": torch.tensor([0, 1])}
    for step in range(30):
        out, targets = TokenSetMixup(1.0, vocab_size, 2, seed=0)(batch, step)
        for i in range(2):
            row = out["ids"][i]
            sep = int((row == SEP).nonzero()[0])
            assert torch.equal(row[:2], ids[i, :2])  # <CLS> and the context token stay
            after = row[sep:][row[sep:] != PAD]
            original_sep = int((ids[i] == SEP).nonzero()[0])
            original_after = ids[i, original_sep:][ids[i, original_sep:] != PAD]
            assert torch.equal(after, original_after)  # the previous block is the cell's own, whole
            kept = row != PAD
            assert torch.equal(out["values"][i][kept], row[kept] % 7 + 1)  # values travel with their genes
        assert torch.allclose(targets.sum(dim=1), torch.ones(2))


def test_soft_cross_entropy_equals_weighted_cross_entropy_on_one_hot_targets() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(16, 5), torch.randint(0, 5, (16,))
    weights = torch.rand(5) + 0.5
    loss, weight = soft_cross_entropy(logits, F.one_hot(labels, 5).float(), weights, 0.0)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels, weight=weights))
    torch.testing.assert_close(weight, weights[labels].sum())


def test_mixup_training_is_recorded_and_seeded(bladder_prepared: Path, tmp_path: Path) -> None:
    options = {**TINY, "max_epochs": 2, "mixup_alpha": 0.4}
    run = cellformer.train(bladder_prepared, out=tmp_path / "a", **options)
    assert cellformer.load(run).config["train"]["mixup_alpha"] == 0.4
    twin = cellformer.train(bladder_prepared, out=tmp_path / "b", **options)
    assert_same_run(run, twin)  # seeded: same seed, same run
    with pytest.raises(ConfigError, match="mixup_alpha"):
        TrainConfig(mixup_alpha=-1.0)


def test_mixup_combines_with_the_masked_gene_loss(bladder_prepared: Path, tmp_path: Path) -> None:
    options = {**TINY, "max_epochs": 1, "mixup_alpha": 0.4, "masked_gene_weight": 1.0}
    run = cellformer.train(bladder_prepared, out=tmp_path / "both", **options)
    rows = (run / "log.csv").read_text().splitlines()
    assert "train_masked_gene_loss" in rows[0] and len(rows) == 2
