"""``cellformer.baseline``: fit a simple classifier on a prepared dataset into a run directory."""

from __future__ import annotations

import csv
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from cellformer.atomic import atomic_directory, write_json
from cellformer.baselines import models
from cellformer.calibration.run import fit_on_outputs
from cellformer.errors import ConfigError, InputError
from cellformer.preparation.prepared import PreparedData
from cellformer.provenance import cellformer_version, now_iso, package_versions
from cellformer.runs import LOG_COLUMNS, Predictions
from cellformer.tokenize import features as feat

logger = logging.getLogger(__name__)

COPIED = ("vocab.json", "classes.json", "tokenizer")


def baseline(
    prepared_dir: str | Path,
    *,
    method: str,
    out: str | Path,
    seed: int = 0,
    overwrite: bool = False,
    n_hvg: int = 2000,
    n_pcs: int = 50,
    **options: Any,
) -> Path:
    """Fit a baseline on exactly the cells and splits of a prepared dataset; returns the run directory.

    Features are log1p-normalized expression (``1e4`` counts per cell) of the ``n_hvg`` most variable
    genes of the *training* cells, standardized and clipped at ±10; ``n_pcs`` principal components of
    the training cells give the kNN space and the embedding of ``logreg`` / ``knn``.

    Parameters
    ----------
    prepared_dir
        Output of ``cellformer prepare``; its input files are read again (they must be unchanged).
    method
        ``"logreg"`` (multinomial logistic regression, the CellTypist approach), ``"knn"`` (kNN on
        PCA, ``k`` chosen on the validation split) or ``"mlp"`` (one hidden layer, early stopping).
    out
        Run directory to create (refused if it exists unless ``overwrite``).
    seed
        Seeds PCA, the solver and the MLP.
    **options
        Method hyper-parameters: ``C``, ``max_iter`` (logreg); ``hidden``, ``dropout``, ``lr``,
        ``weight_decay``, ``batch_size``, ``max_epochs``, ``patience`` (mlp).
    """
    from cellformer.preparation.expression import PreparedExpression

    if method not in models.METHODS:
        raise ConfigError(f"unknown baseline method {method!r}; choose one of: {', '.join(models.METHODS)}")
    chosen = models.METHODS[method]
    allowed = set(chosen.options)
    unknown_options = sorted(set(options) - allowed)
    if unknown_options:
        raise ConfigError(
            f"option(s) {', '.join(unknown_options)} do not apply to the {method} baseline; "
            f"valid: {', '.join(sorted(allowed)) or 'none'}"
        )
    if n_hvg <= 0 or n_pcs <= 0:
        raise ConfigError(f"n_hvg and n_pcs must be positive, got {n_hvg} and {n_pcs}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"output directory {out} already exists; choose another --out or pass --overwrite")
    prepared = PreparedData(prepared_dir)
    n_classes = prepared.n_classes
    labels = np.asarray(prepared.labels)
    train_rows = prepared.split_rows("train")
    val_rows = prepared.splits.get("val", np.zeros(0, np.int64))
    val_rows = val_rows[labels[val_rows] < n_classes]  # unseen labels cannot guide model selection
    if len(train_rows) == 0:
        raise InputError(
            f"prepared dataset {prepared.path} has no training cells; prepare it again with more cells"
        )

    started = time.perf_counter()
    logger.info(
        "%s baseline: reading %d training and %d validation cells", method, len(train_rows), len(val_rows)
    )
    expression = PreparedExpression(prepared)
    X = expression.read(np.r_[train_rows, val_rows])
    X_log = feat.log_normalize(X)
    X_train_log, X_val_log = X_log[: len(train_rows)], X_log[len(train_rows) :]
    y_train, y_val = labels[train_rows], labels[val_rows]

    hvg = feat.training_hvg(X_train_log, n_hvg)
    scaler = feat.Standardizer.fit(X_train_log[:, hvg])
    Z_train, Z_val = scaler.transform(X_train_log[:, hvg]), scaler.transform(X_val_log[:, hvg])
    components, pca_mean = feat.fit_pca(Z_train, n_pcs, seed=seed)
    P_train, P_val = feat.project(Z_train, components, pca_mean), feat.project(Z_val, components, pca_mean)
    logger.info("%d highly variable genes, %d principal components", len(hvg), len(components))

    train, val = models.Features(Z_train, P_train, y_train), models.Features(Z_val, P_val, y_val)
    arrays, info, epoch_log = chosen.fit(train, val, n_classes, seed=seed, **options)
    train_seconds = time.perf_counter() - started

    outputs = {
        name: chosen.forward(arrays, info, Z, P, n_classes)
        for name, Z, P in (("train", Z_train, P_train), ("val", Z_val, P_val))
    }
    detector = fit_on_outputs(
        Predictions(*outputs["train"], train_rows),
        Predictions(*outputs["val"], val_rows),
        prepared,
        n_classes=n_classes,
        space=chosen.unknown_space,
    )
    val_acc = float(np.mean(outputs["val"][0].argmax(1) == y_val)) if len(y_val) else float("nan")
    logger.info("%s baseline fitted in %.1f s; validation accuracy %.3f", method, train_seconds, val_acc)

    all_arrays = {
        "hvg_index": hvg.astype(np.int64),
        "scaler_mean": scaler.mean,
        "scaler_std": scaler.std,
        "pca_components": components,
        "pca_mean": pca_mean,
        **arrays,
    }
    # safetensors writes the raw buffer: Fortran-ordered arrays (sklearn's) must be made C-contiguous
    all_arrays = {name: np.ascontiguousarray(value) for name, value in all_arrays.items()}
    run_config = {
        "kind": method,
        "status": "finished",
        "model": {"method": method, **info},
        "train": {"seed": seed, "n_hvg": int(len(hvg)), "n_pcs": int(len(components)), **options},
        "features": {
            "input": "log1p(1e4 * counts / cell total) over the vocabulary genes",
            "hvg": "seurat-flavour dispersion on the training split",
            "scaling": f"standardized on the training split, clipped at ±{feat.MAX_VALUE:g}",
        },
        "prepared": {"path": str(prepared.path.resolve()), "meta": prepared.meta},
        "seed": seed,
        "data_fingerprint": prepared.fingerprint(),
        "train_seconds": train_seconds,
        "n_train_cells": int(len(train_rows)),
        "n_val_cells": int(len(val_rows)),
        "val_accuracy": val_acc,
        "versions": package_versions(),
        "cellformer_version": cellformer_version(),
        "created": now_iso(),
    }
    with atomic_directory(out, overwrite=overwrite) as tmp:
        from safetensors.numpy import save_file

        for name in COPIED:
            source = prepared.path / name
            if source.is_dir():
                shutil.copytree(source, tmp / name)
            elif source.exists():
                shutil.copy2(source, tmp / name)
        write_json(
            tmp / "features.json",
            {
                "genes": prepared.genes,
                "hvg": [prepared.genes[i] for i in hvg],
                "target_sum": feat.TARGET_SUM,
                "max_value": feat.MAX_VALUE,
            },
        )
        save_file(
            all_arrays, str(tmp / "model.safetensors"), metadata={"format": f"cellformer-baseline-{method}"}
        )
        if epoch_log:
            _write_log(tmp / "log.csv", epoch_log)
        detector.save(tmp)
        write_json(tmp / "config.json", run_config)
        from cellformer.integrity import write_manifest

        write_manifest(tmp, "run")  # sizes and SHA-256 of the run's files (cellformer.integrity)
    logger.info("baseline run directory %s", out)
    return out


def _write_log(path: Path, rows: list[dict[str, float]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in LOG_COLUMNS if k in row})
