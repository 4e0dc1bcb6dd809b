"""``cellformer.train``: train a transformer on a prepared dataset into a run directory."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cellformer.atomic import atomic_path, read_json, write_json
from cellformer.config import ModelConfig, TrainConfig
from cellformer.errors import ConfigError, InputError, RunDirError
from cellformer.kinds import TRANSFORMER
from cellformer.preparation.prepared import PreparedData
from cellformer.provenance import cellformer_version, now_iso, package_versions
from cellformer.text import is_primary_process
from cellformer.training import options
from cellformer.training.health import TrainingDiverged

logger = logging.getLogger(__name__)

COPIED = ("vocab.json", "classes.json", "tokenizer")


def train(
    prepared_dir: str | Path,
    *,
    out: str | Path,
    config: str | Path | dict[str, Any] | None = None,
    resume: bool = False,
    **overrides: Any,
) -> Path:
    """Train the cell transformer on a prepared dataset; returns the run directory.

    Parameters
    ----------
    prepared_dir
        Output of ``cellformer prepare``.
    out
        Run directory to create (see ``docs/design.md``); must not exist yet unless ``resume``.
    config
        YAML file, preset name (``"reference_gpu"``) or dict, with ``model:`` / ``train:`` sections
        or flat keys of :class:`~cellformer.config.ModelConfig` / :class:`~cellformer.config.TrainConfig`.
    resume
        Continue an interrupted run in ``out`` from ``checkpoints/last.ckpt`` (same result as an
        uninterrupted run with the same seed). Only where it runs (devices, workers, ...) may change.
    **overrides
        Single config keys, e.g. ``max_epochs=10, d_model=128``; they win over ``config``.
    """
    prepared = PreparedData(prepared_dir)
    prepared.tokenizer()  # its state must load: the run copies it and `predict` needs it
    out = Path(out)
    requested = options.split_keys(options.read_config_source(config), source=f"config {config}")
    for section, values in options.split_keys(overrides).items():
        requested[section].update(values)
    fingerprint = prepared.fingerprint()
    primary = is_primary_process()

    if resume:
        stored = _stored_run(out, fingerprint)
        from cellformer.integrity import check_copies
        from cellformer.runs import verify_run

        verify_run(out)  # a finished run is checked against its manifest
        check_copies(out, prepared, COPIED)
        if stored.get("status") == "finished":
            logger.info("%s has already finished training; nothing to resume", out)
            return out
        if stored.get("status") == "diverged":  # resuming would diverge again: same data, same lr
            from cellformer.runs import check_finished

            check_finished(out, stored)
        diffs = options.resume_differences(stored, requested)
        if diffs:
            raise ConfigError(f"--resume keeps the run's configuration; these differ: {'; '.join(diffs)}")
        model_config = ModelConfig.from_dict(stored["model"])
        train_config = TrainConfig.from_dict(
            {
                **stored["train"],
                **{k: v for k, v in requested["train"].items() if k in options.EXECUTION_KEYS},
            }
        )
    else:
        model_config = fit_to_data(ModelConfig.from_dict(requested["model"]), prepared)
        train_config = TrainConfig.from_dict(requested["train"])
        if primary:
            _check_new_run_dir(out)

    if train_config.wandb:
        from cellformer.training.trainer import require_wandb

        require_wandb()
    if train_config.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"train accelerator={train_config.accelerator!r} but no CUDA GPU is available here; "
                "pass --accelerator cpu (and e.g. --precision 32-true) or run on a GPU machine"
            )

    from cellformer.training.trainer import check_execution

    check_execution(train_config)  # an unknown --strategy, or a precision this machine cannot run
    from cellformer.training.data import CellDataModule

    datamodule = CellDataModule(
        prepared,
        max_length=model_config.max_length,
        batch_size=train_config.batch_size,
        seed=train_config.seed,
        num_workers=train_config.num_workers,
    )
    if len(datamodule.train_rows) == 0:
        raise InputError(
            f"prepared dataset {prepared.path} has no labelled training cells (splits.npz 'train' is empty); "
            "prepare it again with more cells or a larger train_fraction"
        )
    run_config = {
        "kind": TRANSFORMER,
        "status": "training",
        "model": model_config.to_dict(),
        "train": train_config.to_dict(),
        "prepared": {"path": str(prepared.path.resolve()), "meta": prepared.meta},
        "seed": train_config.seed,
        "data_fingerprint": fingerprint,
        "versions": package_versions(),
        "cellformer_version": cellformer_version(),
        "created": now_iso(),
    }
    if resume and "pretraining" in stored:
        run_config["pretraining"] = stored["pretraining"]
    started_here = primary and not resume
    was_there = out.exists()  # an empty directory the user made: emptied again, not removed
    try:
        if started_here:
            _start_run_dir(out, prepared, run_config)
        return _fit(out, prepared, datamodule, model_config, train_config, run_config, resume, primary)
    except Exception as exc:
        if started_here and not isinstance(exc, TrainingDiverged):
            _remove_unstarted_run(out, keep_directory=was_there)
        raise


def _remove_unstarted_run(out: Path, keep_directory: bool = False) -> None:
    """Remove a run directory this call created when training failed before its first checkpoint.

    Nothing in it can be resumed, and left in state "training" it would block the same ``--out``.
    """
    checkpoints = out / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.glob("*.ckpt")):
        return  # an epoch finished: the run can be continued with --resume
    if not keep_directory:
        shutil.rmtree(out, ignore_errors=True)
    elif out.is_dir():
        for entry in out.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    what = "emptied" if keep_directory else "removed"
    logger.info("%s the run directory %s: training stopped before its first epoch finished", what, out)


def _fit(out, prepared, datamodule, model_config, train_config, run_config, resume, primary) -> Path:
    import lightning.pytorch as pl
    import torch
    from safetensors.torch import save_file

    from cellformer.training.checkpointing import completed_epochs, model_state
    from cellformer.training.context_dropout import ContextDropout
    from cellformer.training.log import EpochLog
    from cellformer.training.module import CellClassifierModule
    from cellformer.training.trainer import build_trainer, epochs_to_train

    pl.seed_everything(train_config.seed, workers=True, verbose=False)
    validate = len(datamodule.val_rows) > 0
    if not validate:
        logger.warning("no labelled validation cells: no early stopping; the last epoch's model is kept")
    weights = (
        class_weights(prepared, datamodule.train_rows, train_config.class_weight_power)
        if train_config.class_weights
        else None
    )
    epoch_log = EpochLog(out / "log.csv")
    module = CellClassifierModule(
        model_config,
        train_config,
        class_weights=None if weights is None else torch.as_tensor(weights, dtype=torch.float32),
        on_epoch=epoch_log,
        validate=validate,
        context_dropout=ContextDropout.from_vocab(
            prepared.context, train_config.context_dropout, train_config.seed
        ),
    )
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = last if resume and last.exists() else None
    if train_config.embedding_init == "svd" and ckpt_path is None:  # a resumed run loads its weights
        from cellformer.training.embedding_init import initialize_gene_embeddings

        initialize_gene_embeddings(  # every ensemble member starts from the same table
            module.model.gene_tables(),
            prepared.store,
            datamodule.train_rows,
            value_limit=prepared.value_bins,
            seed=train_config.seed,
            max_length=model_config.max_length,
        )
    if train_config.pretrain_epochs > 0 and ckpt_path is None:  # a resumed run has its weights
        from cellformer.training.pretrain import pretrain

        run_config["pretraining"] = pretrain(module.model, prepared, train_config)
        if primary:  # a resumed run keeps the record (config.json)
            write_json(out / "config.json", run_config)
        pl.seed_everything(train_config.seed, workers=True, verbose=False)
    if primary:
        epoch_log.start(completed_epochs(ckpt_path) if ckpt_path else 0)
    logger.info(
        "training on %d cells (validation %d), %d classes, %s parameters, max_length %d",
        len(datamodule.train_rows),
        len(datamodule.val_rows),
        model_config.n_classes,
        f"{module.model.num_parameters():,}",
        model_config.max_length,
    )
    epochs = train_config.max_epochs
    if train_config.max_steps is not None:  # the step limit, in whole epochs
        world = train_config.devices * train_config.num_nodes
        epochs = epochs_to_train(train_config, datamodule.steps_per_epoch(world))
    trainer, checkpoint, early_stopping = build_trainer(
        out, train_config, validate=validate, max_epochs=epochs
    )
    run_config["execution"] = execution_record(trainer)  # what Lightning runs (e.g. its precision)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")
        warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except TrainingDiverged as exc:
            raise _diverged(exc, out, train_config, run_config, resume, trainer.is_global_zero) from None
    if not trainer.is_global_zero:
        return out

    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(model_state(best), str(tmp), metadata={"format": "cellformer-transformer"})
    rows = epoch_log.read()
    run_config["result"] = {
        "epochs": len(rows),
        "best_checkpoint": best.name,
        "monitor": train_config.monitor if validate else None,
        f"best_{train_config.monitor}": float(checkpoint.best_model_score)
        if validate and checkpoint.best_model_score is not None
        else None,
        "stopped_early": bool(early_stopping is not None and early_stopping.stopped_epoch > 0),
        "finished": now_iso(),
    }
    if resume:
        run_config["created"] = read_json(out / "config.json").get("created")
    from cellformer.calibration.run import calibrate_run

    # temperature + unknown-cell threshold on the validation split (unknown.json), while the run is
    # still "training": it is "finished" only once weights and calibration are both written
    calibrate_run(out, prepared, unfinished=True)
    run_config["status"] = "finished"
    write_json(out / "config.json", run_config)
    from cellformer.integrity import write_manifest

    write_manifest(out, "run")  # the run's files, once all are written
    from cellformer.training.log import summary_line

    logger.info(summary_line(out, run_config["result"], rows))
    return out


def execution_record(trainer) -> dict[str, Any]:
    """Where and how Lightning actually trains (its precision may differ from the one asked for)."""
    return {
        "precision": str(trainer.precision),
        "accelerator": type(trainer.accelerator).__name__,
        "strategy": type(trainer.strategy).__name__,
        "devices": int(trainer.num_devices),
        "num_nodes": int(trainer.num_nodes),
    }


def _diverged(
    exc: TrainingDiverged,
    out: Path,
    config: TrainConfig,
    run_config: dict[str, Any],
    resume: bool,
    primary: bool,
) -> TrainingDiverged:
    """Mark the run 'diverged' in config.json and return the error with the whole one-line message."""
    from cellformer.training.checkpointing import completed_epochs
    from cellformer.training.health import diverged_message

    last = out / "checkpoints" / "last.ckpt"
    kept = f"{last}, after epoch {completed_epochs(last)}" if last.exists() else None
    if primary:
        if resume:
            run_config["created"] = read_json(out / "config.json").get("created")
        run_config["status"] = "diverged"
        run_config["result"] = {
            "diverged": {"what": exc.what, "epoch": exc.epoch, "step": exc.step, "lr": config.lr},
            "last_good_checkpoint": kept,
            "finished": now_iso(),
        }
        write_json(out / "config.json", run_config)
    error = TrainingDiverged(exc.what, exc.epoch, exc.step)
    error.args = (diverged_message(exc, out, config.lr, kept),)
    return error


def fit_to_data(config: ModelConfig, prepared: PreparedData) -> ModelConfig:
    """Fill vocab_size / n_classes / n_values from the prepared data; refuse ones that contradict it."""
    for name, actual in (
        ("vocab_size", prepared.vocab_size),
        ("n_classes", prepared.n_classes),
        ("n_context", prepared.n_context),  # context tokens (--batch-key / --context-key)
    ):
        given = getattr(config, name)
        if given is not None and given != actual:
            raise ConfigError(
                f"model {name} is {given} but prepared dataset {prepared.path} has {actual}; leave it unset"
            )
    if prepared.n_classes < 2:
        raise InputError(
            f"prepared dataset {prepared.path} has {prepared.n_classes} class(es) in training; need at least 2"
        )
    needed = _n_values(prepared)
    n_values = config.n_values
    if n_values is None:
        n_values = needed
    elif n_values > 0 and needed == 0:
        raise ConfigError(
            f"model n_values={n_values} asks for a value embedding, but prepared dataset {prepared.path} "
            f"(tokenizer {prepared.meta.get('tokenizer', 'rank')!r}) stores no values; set n_values 0 "
            "or prepare with a tokenizer that has values (binned)"
        )
    elif 0 < n_values < needed:
        raise ConfigError(
            f"model n_values={n_values} is smaller than the {needed} value ids in {prepared.path}"
        )
    segments = config.segment_embedding
    if segments is None:  # the time-course variant's tokens have a <SEP> block
        prepare_config = prepared.meta.get("config", {})
        segments = bool(prepare_config.get("previous_layer") or prepare_config.get("time_key"))
    return config.replace(
        vocab_size=prepared.vocab_size,
        n_classes=prepared.n_classes,
        n_values=n_values,
        n_context=prepared.n_context,
        segment_embedding=segments,
    )


def _n_values(prepared: PreparedData) -> int:
    if not prepared.has_values or prepared.store.values is None:
        return 0
    if "n_values" in prepared.meta:
        return int(prepared.meta["n_values"])
    values = prepared.store.values
    return int(values.max()) + 1 if len(values) else 1


def class_weights(prepared: PreparedData, rows: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Inverse class frequency in the training rows to the ``power`` (1: inverse frequency, 0.5: its
    square root), normalised so a balanced split gives all ones."""
    counts = np.bincount(np.asarray(prepared.labels)[rows], minlength=prepared.n_classes).astype(np.float64)
    weights = np.zeros_like(counts)
    present = counts > 0
    weights[present] = (counts.sum() / (present.sum() * counts[present])) ** power
    return weights


def _check_new_run_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirError(
            f"run directory {out} already exists; pass --resume to continue it, or choose another --out"
        )


def _start_run_dir(out: Path, prepared: PreparedData, run_config: dict[str, Any]) -> None:
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = prepared.path / name
        if source.is_dir():
            shutil.copytree(source, out / name, dirs_exist_ok=True)
        elif source.exists():
            shutil.copy2(source, out / name)
    write_json(out / "config.json", run_config)


def _stored_run(out: Path, fingerprint: str) -> dict[str, Any]:
    config_path = out / "config.json"
    if not config_path.exists():
        raise RunDirError(
            f"cannot resume: {out} is not a started run directory (no config.json); drop --resume"
        )
    stored = read_json(config_path)
    if stored.get("kind") != TRANSFORMER:
        raise RunDirError(f"cannot resume {out}: it is a {stored.get('kind')!r} run, not a transformer run")
    if stored.get("data_fingerprint") != fingerprint:
        raise RunDirError(
            f"cannot resume {out}: the prepared dataset differs from the one the run started with "
            f"({stored.get('prepared', {}).get('path')})"
        )
    return stored
