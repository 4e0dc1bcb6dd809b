"""``cellformer.evaluate``: metrics, calibration and plots for one run on one split of its data.

Writes into the run directory::

    predictions/{split}.npz   y_true, proba (uncalibrated), logits, rows, embeddings (if the model has them)
    metrics/{split}.json      every metric, bootstrap CIs, calibration (temperature, ECE before/after)
    plots/                    confusion_{split}.png, per_class_f1_{split}.png, reliability_{split}.png,
                              learning_curves.png (runs with a training log)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellformer.atomic import atomic_path, write_json
from cellformer.calibration.temperature import TemperatureFit, softmax
from cellformer.errors import InputError, RunDirError
from cellformer.evaluation import plots
from cellformer.evaluation.calibration import calibration_summary
from cellformer.evaluation.metrics import classification_metrics
from cellformer.evaluation.runinfo import data_fingerprint, model_size, read_log, training_seconds
from cellformer.evaluation.stats import bootstrap_ci
from cellformer.provenance import cellformer_version, now_iso
from cellformer.runs import Predictions, read_run_config

if TYPE_CHECKING:
    from cellformer.preparation.prepared import PreparedData
    from cellformer.runs import TrainedModel

log = logging.getLogger(__name__)

METRICS_FORMAT = "cellformer-metrics"
# bump when metrics/{split}.json changes (e.g. how its intervals are computed): `compare` then
# evaluates the runs again (evaluation.report.needs_evaluation)
METRICS_FORMAT_VERSION = 1


def evaluate(
    run_dir: str | Path, *, split: str = "test", prepared: str | Path | PreparedData | None = None
) -> dict[str, Any]:
    """Evaluate a trained run on a split of the dataset it was prepared from.

    Parameters
    ----------
    run_dir
        A directory made by ``cellformer train`` or ``cellformer baseline``.
    split
        ``"test"`` (default), ``"val"`` or ``"train"``.
    prepared
        The prepared dataset; by default the one recorded in the run's ``config.json``.

    Returns
    -------
    The metrics, as written to ``run_dir/metrics/{split}.json``. Cells whose label was never seen in
    training count as errors and are listed under ``"unseen"``; probabilities are calibrated by
    temperature scaling fitted on the validation split (``"calibration"``).
    """
    from cellformer.runs import load

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    prepared_data = resolve_prepared(run_dir, config, prepared)
    from cellformer.integrity import check_trained_on

    check_trained_on(run_dir, config, prepared_data)  # re-prepared since training: refused
    return evaluate_model(load(run_dir), prepared_data, split=split)


def resolve_prepared(
    run_dir: Path, config: dict[str, Any], prepared: str | Path | PreparedData | None
) -> PreparedData:
    """The prepared dataset given, or the one recorded in ``config.json["prepared"]["path"]``."""
    from cellformer.config import RunInput
    from cellformer.preparation.prepared import PreparedData

    if isinstance(prepared, PreparedData):
        return prepared
    if prepared is None:
        recorded = RunInput.of(config).path
        if not recorded:
            raise RunDirError(
                f"{run_dir / 'config.json'} records no prepared dataset; pass it with --prepared DIR"
            )
        path = Path(recorded)
        if not path.is_absolute() and not path.exists():
            path = run_dir / recorded
        if not path.exists():
            raise RunDirError(
                f"the prepared dataset {recorded} recorded in {run_dir / 'config.json'} no longer exists; "
                "pass its new location with --prepared DIR"
            )
        prepared = path
    return PreparedData(prepared)


def _split_labels(prepared: PreparedData, split: str) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(prepared.split_rows(split), dtype=np.int64)
    if rows.size == 0:
        raise InputError(f"the {split!r} split of {prepared.path} has no cells; evaluate another split")
    labels = np.asarray(prepared.labels)[rows].astype(np.int64)
    if not (labels >= 0).any():
        raise InputError(
            f"the {split!r} split of {prepared.path} has no labelled cells (labels.npy is -1 for all of "
            "them); evaluation needs true labels: prepare the data with `cellformer prepare INPUT --label-key "
            "COLUMN --out DIR`"
        )
    return rows, labels


def _predict(model: TrainedModel, prepared: PreparedData, split: str, rows: np.ndarray) -> Predictions:
    preds = model.predict_split(prepared, split)
    logits = np.asarray(preds.logits, dtype=np.float32)
    if logits.shape != (len(rows), len(model.classes)):
        raise RunDirError(
            f"run {model.run_dir} returned logits of shape {logits.shape} for the {split!r} split; "
            f"expected ({len(rows)}, {len(model.classes)})"
        )
    embeddings = preds.embeddings
    if preds.rows is not None and not np.array_equal(preds.rows, rows):
        got = np.asarray(preds.rows, dtype=np.int64)
        if not np.array_equal(np.sort(got), np.sort(rows)):
            raise RunDirError(f"run {model.run_dir} predicted other cells than the {split!r} split holds")
        where = {int(r): i for i, r in enumerate(got)}
        order = np.array([where[int(r)] for r in rows])
        logits = logits[order]
        embeddings = None if embeddings is None else np.asarray(embeddings)[order]
    return Predictions(logits=logits, embeddings=embeddings, rows=rows)


def _write_predictions(path: Path, preds: Predictions, y_true: np.ndarray) -> None:
    arrays = {
        "y_true": y_true.astype(np.int64),
        "proba": softmax(preds.logits).astype(np.float32),
        "logits": preds.logits.astype(np.float32),
        "rows": np.asarray(preds.rows, dtype=np.int64),
    }
    if preds.embeddings is not None:
        arrays["embeddings"] = np.asarray(preds.embeddings, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def _stored_calibration(model: TrainedModel, split: str) -> tuple[TemperatureFit, str | None]:
    """The temperature fitted on the validation split when the run was made (``unknown.json``): the
    one ``predict`` uses, so ``evaluate`` reports the probabilities users get."""
    from cellformer.calibration.run import stored_calibration

    stored = stored_calibration(model)  # a run without it is refused (incomplete, or another version)
    if split == "val" and stored.calibrated:
        log.warning("evaluating the validation split: the temperature was fitted on the same cells")
    return stored.temperature_fit, ("val" if stored.calibrated else None)


def evaluate_model(model: TrainedModel, prepared: PreparedData, *, split: str = "test") -> dict[str, Any]:
    """Evaluate an already loaded model (any object following ``cellformer.runs.TrainedModel``).

    This does the work of :func:`evaluate` and writes into ``model.run_dir``.
    """
    run_dir = Path(model.run_dir)
    classes = list(model.classes)
    if classes != prepared.classes:
        raise RunDirError(
            f"run {run_dir} was trained on other classes than {prepared.path} holds "
            f"({len(classes)} vs {len(prepared.classes)} classes); evaluate it on its own prepared dataset"
        )
    from cellformer.evaluation.unknown import split_summary

    rows, labels = _split_labels(prepared, split)
    preds = _predict(model, prepared, split, rows)
    _write_predictions(run_dir / "predictions" / f"{split}.npz", preds, labels)
    from cellformer.integrity import evaluation_record

    integrity = evaluation_record(run_dir, prepared, rows, labels, preds.logits)
    fit, fitted_on = _stored_calibration(model, split)

    labelled = labels >= 0
    y_true, logits = labels[labelled], preds.logits[labelled]
    label_names = classes + list(prepared.unseen)
    proba = softmax(logits)
    metrics = classification_metrics(y_true, proba, label_names, len(classes))
    training_log = read_log(run_dir)
    result: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "format_version": METRICS_FORMAT_VERSION,
        "run": {"name": run_dir.name, "run_dir": str(run_dir.resolve()), "kind": model.kind},
        "split": split,
        "data": {
            "prepared": str(Path(prepared.path).resolve()),
            "fingerprint": data_fingerprint(prepared, split),
            # which prepared data and cells (cellformer.integrity): compare checks them
            "prepared_fingerprint": integrity["prepared_fingerprint"],
            "cells_sha256": integrity["cells_sha256"],
            "copies_of_training_cells": integrity["copies_of_training_cells"],
            "classes": classes,
            "unseen": list(prepared.unseen),
            "n_unlabelled_excluded": int((~labelled).sum()),
        },
        **{k: v for k, v in metrics.items() if k not in ("per_class", "confusion")},
        "ci": bootstrap_ci(y_true, proba.argmax(axis=1), len(label_names)),
        "calibration": calibration_summary(fit, logits, y_true, fitted_on),
        "unseen": _unseen_report(y_true, proba.argmax(axis=1), classes, list(prepared.unseen)),
        "unknown": split_summary(model, prepared, rows, preds, labels),  # the stored unknown score
        "per_class": metrics["per_class"],
        "confusion": metrics["confusion"],
        "model": {
            **model_size(run_dir),
            "train_seconds": training_seconds(model.config, training_log),
            "epochs": None if training_log is None else len(training_log["epoch"]),
        },
        "plots": _write_plots(run_dir, split, metrics, fit, y_true, logits, training_log),
        "integrity": {k: integrity[k] for k in ("predictions_sha256", "run_manifest")},
        "created": now_iso(),
        "cellformer_version": cellformer_version(),
    }
    (run_dir / "metrics").mkdir(exist_ok=True)
    write_json(run_dir / "metrics" / f"{split}.json", result)
    log.info(
        "%s on %s: accuracy %.3f, macro-F1 %.3f (95%% CI %.3f-%.3f), ECE %.3f -> %.3f (T=%.2f)",
        run_dir.name,
        split,
        result["accuracy"],
        result["macro_f1"],
        *result["ci"]["macro_f1"],
        result["calibration"]["ece_before"],
        result["calibration"]["ece_after"],
        fit.temperature,
    )
    return result


def _unseen_report(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], unseen: list[str]
) -> list[dict[str, Any]]:
    """For each label unseen in training: how many cells, and which classes they were called."""
    out = []
    for i, name in enumerate(unseen):
        called = y_pred[y_true == len(classes) + i]
        if called.size:
            counts = np.bincount(called, minlength=len(classes))
            predicted_as = {
                classes[j]: int(counts[j]) for j in np.argsort(-counts, kind="stable") if counts[j]
            }
            out.append({"label": name, "n_cells": int(called.size), "predicted_as": predicted_as})
    return out


def _write_plots(
    run_dir: Path,
    split: str,
    metrics: dict[str, Any],
    fit: TemperatureFit,
    y_true: np.ndarray,
    logits: np.ndarray,
    training_log: dict[str, np.ndarray] | None,
) -> dict[str, str]:
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    name = run_dir.name
    written: dict[str, str] = {}

    def save(key: str, fig) -> None:
        if fig is not None:
            plots.save_png(fig, plot_dir / f"{key}.png")
            written[key.removesuffix(f"_{split}")] = f"plots/{key}.png"

    confusion = metrics["confusion"]
    n_classes = len(confusion["predicted_labels"])
    true_labels = [x if i < n_classes else f"{x} [unseen]" for i, x in enumerate(confusion["true_labels"])]
    save(
        f"confusion_{split}",
        plots.confusion_figure(
            np.asarray(confusion["matrix"]),
            true_labels,
            confusion["predicted_labels"],
            f"{name}: confusion matrix ({split}, rows normalised)",
        ),
    )
    per_class = [c for c in metrics["per_class"] if c["seen_in_training"]]
    save(
        f"per_class_f1_{split}",
        plots.per_class_f1_figure(
            [c["label"] for c in per_class],
            [c["support"] for c in per_class],
            {name: [c["f1"] for c in per_class]},
            f"{name}: F1 per class ({split})",
        ),
    )
    before, after = softmax(logits), fit.apply(logits)
    save(
        f"reliability_{split}",
        plots.reliability_figure(
            {
                "before calibration": (before.max(axis=1), before.argmax(axis=1) == y_true),
                f"after (T={fit.temperature:.2f})": (after.max(axis=1), after.argmax(axis=1) == y_true),
            },
            f"{name}: reliability ({split})",
        ),
    )
    if training_log is not None:
        save("learning_curves", plots.learning_curves_figure(training_log, f"{name}: learning curves"))
    return written
