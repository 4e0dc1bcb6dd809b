"""Consistency training (R-Drop on gene dropout): two seeded views per step, a KL term, recorded and
reproducible. Real data: the bladder cells prepared by the session fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import TINY, assert_same_run, token_batch

import cellformer
from cellformer.config import TrainConfig
from cellformer.errors import ConfigError
from cellformer.preparation.prepared import PreparedData
from cellformer.training.augment import GeneDropout


def test_the_two_views_are_different_seeded_draws(bladder_prepared: Path) -> None:
    batch = token_batch(PreparedData(bladder_prepared), 16)
    dropout = GeneDropout(0.4, PreparedData(bladder_prepared).vocab_size, seed=3)
    first, second = (dropout(batch, step=7, rank=0, view=view) for view in (0, 1))
    assert not torch.equal(first["ids"], second["ids"])
    torch.testing.assert_close(dropout(batch, 7, 0, 1)["ids"], second["ids"])  # same key, same draw
    torch.testing.assert_close(dropout(batch, 7, 0)["ids"], first["ids"])  # view 0 = plain gene dropout
    kept = [(~view["padding_mask"]).sum(dim=1).float() for view in (first, second)]
    full = (~batch["padding_mask"]).sum(dim=1).float()
    for count in kept:  # about 60 % of the gene tokens stay in each view
        assert 0.45 < float(((count - 1) / (full - 1)).mean()) < 0.75


def test_consistency_training_is_recorded_seeded_and_learns(bladder_prepared: Path, tmp_path: Path) -> None:
    options = {**TINY, "max_epochs": 3, "consistency_weight": 1.0}
    run = cellformer.train(bladder_prepared, out=tmp_path / "a", **options)
    assert cellformer.load(run).config["train"]["consistency_weight"] == 1.0
    twin = cellformer.train(bladder_prepared, out=tmp_path / "b", **options)
    assert_same_run(run, twin)  # seeded: same seed, same run
    plain = cellformer.train(bladder_prepared, out=tmp_path / "c", **{**options, "consistency_weight": 0.0})
    log = (run / "log.csv").read_text().splitlines()
    header = log[0].split(",")
    train_loss = [float(row.split(",")[header.index("train_loss")]) for row in log[1:]]
    assert train_loss[-1] < train_loss[0]  # it learns
    assert (run / "log.csv").read_text() != (plain / "log.csv").read_text()  # the term changes training


@pytest.mark.parametrize(
    "options, message",
    [
        ({"consistency_weight": -1.0}, "consistency_weight"),
        ({"consistency_weight": 1.0, "gene_dropout": 0.0}, "needs gene_dropout"),
        ({"consistency_weight": 1.0, "masked_gene_weight": 1.0}, "cannot both"),
    ],
)
def test_bad_consistency_settings_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**options)
