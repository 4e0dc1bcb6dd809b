"""The Lightning Trainer for a run: devices, precision, checkpoints, early stopping, loggers."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from cellformer.config import TrainConfig
from cellformer.errors import ConfigError
from cellformer.training.checkpointing import AtomicCheckpointIO


def precision(config: TrainConfig) -> str:
    """bf16 autocast on a GPU, full float32 on CPU, unless the config says otherwise."""
    if config.precision is not None:
        return config.precision
    on_gpu = config.accelerator in ("gpu", "cuda") or (
        config.accelerator == "auto" and torch.cuda.is_available()
    )
    return "bf16-mixed" if on_gpu else "32-true"


def _on_cpu(config: TrainConfig) -> bool:
    return config.accelerator == "cpu" or (config.accelerator == "auto" and not torch.cuda.is_available())


def check_execution(config: TrainConfig) -> None:
    """Refuse, before any run directory exists, a strategy Lightning does not know or a precision it
    would silently replace (``16-mixed`` on a CPU runs as ``bf16-mixed``)."""
    from lightning.pytorch.strategies import StrategyRegistry

    strategy = config.strategy
    if isinstance(strategy, str) and strategy != "auto" and strategy not in StrategyRegistry:
        known = StrategyRegistry.available_strategies()
        common = [s for s in ("ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp") if s in known]
        raise ConfigError(
            f"unknown --strategy {strategy!r}: leave it at auto (the default: DDP on several devices) or "
            f"name a Lightning strategy, e.g. {', '.join(common)} ({len(known)} registered)"
        )
    if config.precision in ("16-mixed", "16") and _on_cpu(config):
        raise ConfigError(
            f"--precision {config.precision} needs a CUDA GPU: on the CPU Lightning would run bf16-mixed "
            "instead; pass --precision bf16-mixed (what it would run) or 32-true (the CPU default)"
        )


def build_trainer(
    out: Path, config: TrainConfig, *, validate: bool, max_epochs: int | None = None
) -> tuple[pl.Trainer, ModelCheckpoint, EarlyStopping | None]:
    """The Trainer, its checkpoint callback and its early stopping (``None`` when off). ``max_epochs``
    replaces ``config.max_epochs`` (:func:`epochs_to_train` applies ``max_steps``)."""
    mode = "min" if config.monitor == "val_loss" else "max"  # val_macro_f1: higher is better
    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best",
        monitor=config.monitor if validate and config.keep == "best" else None,
        mode=mode,
        save_top_k=1,
        save_last=True,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    callbacks: list[pl.Callback] = [checkpoint]
    if config.ema_decay > 0:  # validation and every checkpoint's state_dict see the averaged weights
        callbacks.append(EMAWeightAveraging(decay=config.ema_decay))
    early_stopping = None
    if validate and config.patience > 0:
        early_stopping = EarlyStopping(
            monitor=config.monitor, mode=mode, patience=config.patience, check_on_train_epoch_end=True
        )
        callbacks.append(early_stopping)
    if config.progress_bar:
        callbacks.append(StderrProgressBar())
    if precision(config).startswith("bf16") or config.accelerator in ("gpu", "cuda"):
        torch.set_float32_matmul_precision("high")
    try:
        trainer = _trainer(out, config, validate, callbacks, max_epochs or config.max_epochs)
    except (ValueError, TypeError, RuntimeError, ImportError, MisconfigurationException) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"cannot set up training with accelerator={config.accelerator}, devices={config.devices}, "
            f"strategy={config.strategy}, precision={precision(config)}: {first}"
        ) from None
    return trainer, checkpoint, early_stopping


def build_pretrainer(config: TrainConfig, epochs: int) -> pl.Trainer:
    """The Trainer of masked-gene pretraining (``cellformer.training.pretrain``): the run's devices and
    precision, no validation, no checkpoints (the supervised phase checkpoints), no logger."""
    callbacks: list[pl.Callback] = [StderrProgressBar()] if config.progress_bar else []
    return pl.Trainer(
        **_shared_settings(config),
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
    )


def epochs_to_train(config: TrainConfig, steps_per_epoch: int) -> int:
    """``max_epochs``, or fewer when ``max_steps`` ends training first: the step limit rounded up to
    whole epochs, so the last epoch is validated and checkpointed like the others."""
    if config.max_steps is None:
        return config.max_epochs
    return min(config.max_epochs, max(1, -(-config.max_steps // max(1, steps_per_epoch))))


def _trainer(
    out: Path, config: TrainConfig, validate: bool, callbacks: list[pl.Callback], max_epochs: int
) -> pl.Trainer:
    return pl.Trainer(
        **_shared_settings(config),
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=_wandb_logger(out, config) if config.wandb else False,
        plugins=[AtomicCheckpointIO()],
        limit_val_batches=None if validate else 0,
        default_root_dir=out,
        log_every_n_steps=50,
    )


def _shared_settings(config: TrainConfig) -> dict:
    """What every Trainer of a run shares (the classifier's and pretraining's): devices, precision,
    clipping, progress bar; the batch sampler shards itself (train.data.ShardedBatchSampler)."""
    return dict(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=precision(config),
        gradient_clip_val=config.grad_clip,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bars on stderr (with every other message), not stdout.

    The training bar is a new one each epoch and disappears when the epoch ends, where the module
    logs its one-line epoch summary instead.
    """

    def __init__(self) -> None:
        super().__init__(leave=True)  # Lightning: a new training bar per epoch, closed at its end

    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(
            desc=self.train_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # close the bars (they do not stay on screen) so the error line starts a line of its own
        for bar in (self._train_progress_bar, self._val_progress_bar):
            if bar is not None:
                bar.close()

    def init_validation_tqdm(self) -> Tqdm:
        has_main_bar = self.trainer.state.fn != "validate"
        return Tqdm(
            desc=self.validation_description,
            position=2 * self.process_position + has_main_bar,
            disable=self.is_disabled,
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
            bar_format=self.BAR_FORMAT,
        )


def require_wandb() -> None:
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError(
            "train wandb=true needs the wandb package: pip install wandb (or 'cellformer[wandb]')"
        ) from None


def _wandb_logger(out: Path, config: TrainConfig):
    from lightning.pytorch.loggers import WandbLogger

    require_wandb()
    return WandbLogger(
        project=config.wandb_project,
        save_dir=str(out),
        offline=config.wandb_mode == "offline",
        mode=config.wandb_mode,
    )
