"""The LightningModule: class-weighted cross-entropy, AdamW with warm-up + cosine, per-epoch metrics."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from cellformer.config import ModelConfig, TrainConfig
from cellformer.errors import ConfigError
from cellformer.model import build_model
from cellformer.training.augment import GeneDropout
from cellformer.training.context_dropout import ContextDropout
from cellformer.training.health import CHECK_EVERY, GradientWatch, check_epoch
from cellformer.training.masked_genes import GeneMasking, MaskedGeneHead, masked_gene_loss
from cellformer.training.mixup import TokenSetMixup

METRICS = ("loss", "acc", "macro_f1")
log = logging.getLogger(__name__)


def warmup_cosine(total_steps: int, warmup_fraction: float, min_fraction: float) -> Callable[[int], float]:
    """LR multiplier at a step: linear warm-up, then cosine decay from 1 to ``min_fraction``."""
    warmup = max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class _EpochMetrics(torch.nn.Module):
    """Loss (weighted mean), accuracy and macro-F1 over an epoch; synchronised across DDP processes."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.loss = MeanMetric(
            nan_strategy="disable"
        )  # a NaN loss makes the epoch loss NaN (training.health)
        self.acc = MulticlassAccuracy(n_classes, average="micro")
        self.macro_f1 = MulticlassF1Score(n_classes, average="macro")

    def update(
        self, loss: torch.Tensor, weight: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> None:
        self.loss.update(loss.detach(), weight)
        predicted = logits.detach().argmax(dim=1)
        self.acc.update(predicted, labels)
        self.macro_f1.update(predicted, labels)

    def compute_and_reset(self) -> dict[str, float]:
        values = {name: float(getattr(self, name).compute()) for name in METRICS}
        for name in METRICS:
            getattr(self, name).reset()
        return values


class CellClassifierModule(pl.LightningModule):
    """Trains :class:`CellTransformer` (encoder and classifier head jointly).

    ``class_weights`` (``(n_classes,)`` or ``None``) weight the cross-entropy; ``on_epoch`` receives
    each finished epoch's metrics (the run directory's ``log.csv``) before checkpoints are written.
    ``context_dropout`` (or ``None``) replaces context tokens by ``<UNK>`` in training steps only.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        class_weights: torch.Tensor | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        validate: bool = True,
        context_dropout: ContextDropout | None = None,
    ) -> None:
        super().__init__()
        self.model_config = model_config
        self.train_config = train_config
        if model_config.members > 1 and (
            train_config.masked_gene_weight > 0
            or train_config.pretrain_epochs > 0
            or train_config.consistency_weight > 0
        ):
            raise ConfigError(
                f"model members = {model_config.members} trains each member on the classification loss "
                "alone: masked-gene training, pretraining and consistency training need one transformer "
                "(add --members 1; in Python members=1), or turn off masked_gene_weight, pretrain_epochs "
                "and consistency_weight"
            )
        self.model = build_model(model_config)
        if train_config.embedding_lr_factor == 0:  # frozen before DDP wraps the model: no gradient to sync
            for table in self.model.gene_tables():
                table.weight.requires_grad_(False)
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.train_metrics = _EpochMetrics(model_config.n_classes)
        self.val_metrics = _EpochMetrics(model_config.n_classes)
        self.on_epoch = on_epoch
        self.validate = validate
        self.context_dropout = context_dropout
        self.gene_dropout = (
            GeneDropout(train_config.gene_dropout, model_config.vocab_size, train_config.seed)
            if train_config.gene_dropout > 0
            else None
        )
        self.mixup = (
            TokenSetMixup(
                train_config.mixup_alpha, model_config.vocab_size, model_config.n_classes, train_config.seed
            )
            if train_config.mixup_alpha > 0
            else None
        )
        # the masked-gene auxiliary objective: its head is part of this module (and of its checkpoints),
        # not of the exported model, which only classifies
        self.masked_genes = (
            GeneMasking(train_config.masked_gene_fraction, model_config.vocab_size, train_config.seed)
            if train_config.masked_gene_weight > 0
            else None
        )
        self.masked_gene_head = (
            MaskedGeneHead(model_config.d_model, model_config.vocab_size)
            if self.masked_genes is not None
            else None
        )
        self.masked_gene_metric = MeanMetric(nan_strategy="disable")
        self._epoch_start = 0.0
        self.gradient_watch = GradientWatch()  # non-finite gradients stop training (training.health)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        values = batch.get("values") if self.model.value_embedding is not None else None
        return self.model(batch["ids"], batch["padding_mask"], values)

    def _step(
        self,
        batch: dict[str, torch.Tensor],
        metrics: _EpochMetrics,
        label_smoothing: float = 0.0,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logits, _ = self(batch)  # (B, n_classes)
        return self._classification_loss(logits, batch["label"], metrics, label_smoothing, targets)

    def _classification_loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        metrics: _EpochMetrics | None,
        label_smoothing: float,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class-weighted cross-entropy against ``labels`` or, with mixup, the mixed ``targets``
        ``(B, n_classes)``; the metrics count each cell under its own label."""
        if targets is None:
            loss = F.cross_entropy(
                logits.float(), labels, weight=self.class_weights, label_smoothing=label_smoothing
            )
            weight = (
                self.class_weights[labels].sum()
                if self.class_weights is not None
                else labels.new_tensor(len(labels))
            )
        else:
            loss, weight = soft_cross_entropy(logits, targets, self.class_weights, label_smoothing)
        if metrics is not None:
            metrics.update(loss, weight.float(), logits, labels)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.context_dropout is not None:  # training only; draws nothing when there is none
            batch = {**batch, "ids": self.context_dropout(batch["ids"], self.global_step, self.global_rank)}
        mixed = None  # mixup's label rows (B, n_classes), or None: each cell's own label
        if self.mixup is not None:
            batch, mixed = self.mixup(batch, self.global_step, self.global_rank)
        if self.train_config.consistency_weight > 0:
            return self._consistency_step(batch, mixed)
        if self.model_config.members > 1:
            return self._members_step(batch, mixed)
        if self.gene_dropout is not None:
            batch = self.gene_dropout(batch, self.global_step, self.global_rank)
        if self.masked_genes is None:
            return self._step(batch, self.train_metrics, self.train_config.label_smoothing, mixed)
        return self._masked_step(batch, mixed)

    def _members_step(self, batch: dict[str, torch.Tensor], mixed: torch.Tensor | None) -> torch.Tensor:
        """Each ensemble member on its own gene-dropout view of the batch (member ``i``: view ``i``), the
        mean of their classification losses; the epoch metrics count the first member."""
        losses = []
        for index, member in enumerate(self.model.members):
            view = batch
            if self.gene_dropout is not None:
                view = self.gene_dropout(batch, self.global_step, self.global_rank, view=index)
            values = view.get("values") if member.value_embedding is not None else None
            logits, _ = member(view["ids"], view["padding_mask"], values)
            metrics = self.train_metrics if index == 0 else None
            losses.append(
                self._classification_loss(
                    logits, batch["label"], metrics, self.train_config.label_smoothing, mixed
                )
            )
        return torch.stack(losses).mean()

    def _consistency_step(self, batch: dict[str, torch.Tensor], mixed: torch.Tensor | None) -> torch.Tensor:
        """R-Drop on gene dropout: two independent gene-dropout views of each cell, the classification loss
        of each (averaged) plus ``consistency_weight x`` the symmetric KL divergence between their predicted
        distributions. The epoch metrics count the first view."""
        assert self.gene_dropout is not None  # TrainConfig requires gene dropout with consistency
        step, rank = self.global_step, self.global_rank
        logits = [
            self(self.gene_dropout(batch, step, rank, view))[0].float() for view in (0, 1)
        ]  # 2 x (B, K)
        smoothing = self.train_config.label_smoothing
        loss = self._classification_loss(logits[0], batch["label"], self.train_metrics, smoothing, mixed)
        second = self._classification_loss(logits[1], batch["label"], None, smoothing, mixed)
        log_p, log_q = (F.log_softmax(x, dim=-1) for x in logits)  # (B, K) each
        kl = 0.5 * (
            F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")
            + F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
        )
        return 0.5 * (loss + second) + self.train_config.consistency_weight * kl

    def _masked_step(self, batch: dict[str, torch.Tensor], mixed: torch.Tensor | None) -> torch.Tensor:
        """One forward of the masked cells: the classification loss on ``<CLS>`` plus the weighted
        masked-gene loss on the hidden positions."""
        batch, hidden, targets = self.masked_genes(batch, self.global_step, self.global_rank)
        values = batch.get("values") if self.model.value_embedding is not None else None
        states = self.model.encode(batch["ids"], batch["padding_mask"], values)  # (B, T, C)
        logits = self.model.head(self.model.pool(states, batch["padding_mask"]))  # (B, n_classes)
        loss = self._classification_loss(
            logits, batch["label"], self.train_metrics, self.train_config.label_smoothing, mixed
        )
        genes = masked_gene_loss(
            self.masked_gene_head, states, hidden, targets, self.model.gene_embedding.weight
        )
        self.masked_gene_metric.update(genes.detach(), max(1, int(hidden.sum())))
        return loss + self.train_config.masked_gene_weight * genes

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, self.val_metrics)

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Randomness (dropout) depends only on seed, step and process, not on what drew random numbers
        # before: a run resumed from a checkpoint continues exactly as the uninterrupted run would have.
        seed = (self.train_config.seed, self.global_step, self.global_rank)
        torch.manual_seed(hash(seed) % (2**63))

    def on_before_optimizer_step(self, optimizer) -> None:
        # fp16's gradient scaler skips steps whose (scaled) gradients overflow: that is not divergence
        if getattr(self.trainer.precision_plugin, "scaler", None) is None:
            self.gradient_watch.note(self.parameters(), self.global_step + 1)  # 1-based step

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.global_step % CHECK_EVERY == 0:
            self.gradient_watch.check(self.current_epoch + 1)

    def on_train_epoch_end(self) -> None:
        # Runs after this epoch's validation and before the checkpoint / early-stopping callbacks.
        self.gradient_watch.check(self.current_epoch + 1)
        row: dict[str, float] = {"epoch": self.current_epoch + 1}
        row.update({f"train_{k}": v for k, v in self.train_metrics.compute_and_reset().items()})
        if self.masked_genes is not None:
            row["train_masked_gene_loss"] = float(self.masked_gene_metric.compute())
            self.masked_gene_metric.reset()
        if self.validate:
            row.update({f"val_{k}": v for k, v in self.val_metrics.compute_and_reset().items()})
        row["lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        row["seconds"] = time.perf_counter() - self._epoch_start
        check_epoch(row, self.current_epoch + 1)  # before the checkpoint: the last one stays a healthy one
        # values are already synchronised across processes (torchmetrics); sync_dist averages equal
        # numbers (and keeps Lightning from recommending it on every epoch)
        self.log_dict({k: float(v) for k, v in row.items() if k != "epoch"}, sync_dist=True)
        if self.global_rank == 0:
            if self.on_epoch is not None:
                self.on_epoch(row)
            log.info(epoch_line(row, self.trainer.max_epochs))

    def configure_optimizers(self):
        config = self.train_config
        genes = [table.weight for table in self.model.gene_tables()]
        tables = {id(weight) for weight in genes}
        groups = decay_groups([p for p in self.parameters() if id(p) not in tables], config.weight_decay)
        if genes[0].requires_grad:  # embedding_lr_factor 0: frozen in __init__, kept as initialised
            groups.append(
                {
                    "params": genes,
                    "weight_decay": config.weight_decay,
                    "lr": config.lr * config.embedding_lr_factor,
                }
            )
        return adamw_with_schedule(groups, config, int(self.trainer.estimated_stepping_batches))


def decay_groups(parameters: list[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """AdamW parameter groups of the trainable ``parameters``: weight decay on matrices, none on biases
    and LayerNorms."""
    trainable = [p for p in parameters if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]


def adamw_with_schedule(groups: list[dict], config: TrainConfig, total_steps: int) -> dict:
    """Lightning's ``configure_optimizers`` answer: AdamW at ``config.lr`` with the warm-up + cosine
    schedule (:func:`warmup_cosine`) over ``total_steps``, stepped every optimizer step."""
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    factor = warmup_cosine(max(1, total_steps), config.warmup_fraction, config.min_lr_fraction)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def soft_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_weights: torch.Tensor | None,
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-weighted cross-entropy against probability rows ``targets`` ``(B, n_classes)``, and its weight.

    Each class term is weighted as hard-label cross-entropy weights its cell, and the sum is divided by
    the total weight, so one-hot ``targets`` (no smoothing) give ``F.cross_entropy(..., weight=...)``.
    """
    n_classes = logits.shape[1]
    if label_smoothing > 0:
        targets = targets * (1 - label_smoothing) + label_smoothing / n_classes
    log_p = F.log_softmax(logits.float(), dim=1)  # (B, n_classes)
    weighted = targets if class_weights is None else targets * class_weights  # (B, n_classes)
    weight = weighted.sum()
    return -(weighted * log_p).sum() / weight.clamp(min=1e-12), weight


def epoch_line(row: dict[str, float], max_epochs: int | None = None) -> str:
    """One line per finished epoch: ``epoch 3/30: train loss 0.512, val loss 0.611, val macro-F1 0.732``."""
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    parts = [f"train loss {row['train_loss']:.4f}"]
    if "val_loss" in row:
        parts += [f"val loss {row['val_loss']:.4f}", f"val macro-F1 {row['val_macro_f1']:.3f}"]
    return f"epoch {int(row['epoch'])}{total}: {', '.join(parts)} ({row['seconds']:.1f} s)"
