"""Masked-gene pretraining before fine-tuning: the encoder learns from unlabelled cells first.

Geneformer pretrains its encoder by hiding 15 % of each cell's gene tokens and predicting them, on
tens of millions of unlabelled cells, and then fine-tunes it on a few labelled ones. ``train
--pretrain-epochs N`` does that at the scale of one study: the encoder is first trained for ``N``
epochs on the masked-gene objective alone (:mod:`cellformer.training.masked_genes`) over the training
cells and any unlabelled cells ``prepare --unlabelled`` added (labels are never read), then the
classifier is trained as usual from those weights. The masked-gene head is dropped afterwards: the
run keeps one classifier. Seeded like the classifier (draws from ``(seed, step, rank)``); a resumed
run that has a checkpoint of the supervised phase does not pretrain again.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torchmetrics import MeanMetric

from cellformer.config import TrainConfig
from cellformer.errors import ConfigError
from cellformer.model import CellTransformer
from cellformer.preparation.prepared import PreparedData
from cellformer.training.data import CellDataModule
from cellformer.training.masked_genes import GeneMasking, MaskedGeneHead, masked_gene_loss

log = logging.getLogger(__name__)


class MaskedGenePretraining(pl.LightningModule):
    """Trains ``model``'s encoder (in place) on the masked-gene objective; the classifier head idles."""

    def __init__(self, model: CellTransformer, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.masking = GeneMasking(config.masked_gene_fraction, model.config.vocab_size, config.seed)
        self.head = MaskedGeneHead(model.config.d_model, model.config.vocab_size)
        self.loss_metric = MeanMetric(nan_strategy="disable")
        self.losses: list[float] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        masked, hidden, targets = self.masking(batch, self.global_step, self.global_rank)
        values = masked.get("values") if self.model.value_embedding is not None else None
        states = self.model.encode(masked["ids"], masked["padding_mask"], values)  # (B, T, C)
        loss = masked_gene_loss(self.head, states, hidden, targets, self.model.gene_embedding.weight)
        self.loss_metric.update(loss.detach(), max(1, int(hidden.sum())))
        return loss

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        seed = (self.config.seed, self.global_step, self.global_rank, 0x5052)  # dropout: as the classifier
        torch.manual_seed(hash(seed) % (2**63))

    def on_train_epoch_end(self) -> None:
        loss = float(self.loss_metric.compute())
        self.loss_metric.reset()
        if not math.isfinite(loss):
            raise ConfigError(
                f"pretraining diverged: the masked-gene loss became {loss} in pretraining epoch "
                f"{self.current_epoch + 1}; try a lower --lr"
            )
        self.losses.append(loss)
        if self.global_rank == 0:
            log.info(
                "pretraining epoch %d/%d: masked-gene loss %.4f",
                self.current_epoch + 1,
                self.trainer.max_epochs,
                loss,
            )

    def configure_optimizers(self):
        from cellformer.training.module import adamw_with_schedule, decay_groups

        groups = decay_groups(list(self.parameters()), self.config.weight_decay)
        return adamw_with_schedule(groups, self.config, int(self.trainer.estimated_stepping_batches))


def pretraining_rows(prepared: PreparedData) -> np.ndarray:
    """The cells pretraining reads: the training split and the ``unlabelled`` split (sorted)."""
    parts = [prepared.splits.get(name, np.zeros(0, np.int64)) for name in ("train", "unlabelled")]
    return np.sort(np.concatenate(parts)).astype(np.int64)


def pretrain(model: CellTransformer, prepared: PreparedData, config: TrainConfig) -> dict[str, Any]:
    """Train ``model``'s encoder for ``config.pretrain_epochs`` epochs of masked genes; what it did."""
    from cellformer.training.trainer import build_pretrainer

    rows = pretraining_rows(prepared)
    data = CellDataModule(
        prepared,
        max_length=model.config.max_length,
        batch_size=config.batch_size,
        seed=config.seed,
        num_workers=config.num_workers,
    )
    data.train_rows, data.val_rows = rows, np.zeros(0, np.int64)
    n_unlabelled = len(prepared.splits.get("unlabelled", ()))
    log.info(
        "pretraining the encoder on %d cells (%d training, %d unlabelled) for %d epochs: masked genes (%.0f%%)",
        len(rows),
        len(rows) - n_unlabelled,
        n_unlabelled,
        config.pretrain_epochs,
        100 * config.masked_gene_fraction,
    )
    task = MaskedGenePretraining(model, config)
    trainer = build_pretrainer(config, config.pretrain_epochs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*val_dataloader.*no `validation_step`.*")
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(task, datamodule=data)
    return {
        "epochs": config.pretrain_epochs,
        "cells": int(len(rows)),
        "unlabelled_cells": int(n_unlabelled),
        "masked_gene_fraction": config.masked_gene_fraction,
        "masked_gene_loss": [round(loss, 6) for loss in task.losses],
    }
