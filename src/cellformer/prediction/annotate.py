"""Writing the outputs into the AnnData: the ``obs`` / ``obsm`` / ``uns`` keys of ``cellformer.predict``,
and the parameters and notes that describe the calibration and the unknown-cell rule."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellformer.calibration.unknown import UnknownDetector
from cellformer.config import RunInput
from cellformer.prediction.outputs import CellOutputs
from cellformer.prediction.writing import score_quantiles

if TYPE_CHECKING:
    import anndata as ad

    from cellformer.runs import TrainedModel

logger = logging.getLogger(__name__)


def annotate(
    adata: ad.AnnData,
    model: TrainedModel,
    cells: CellOutputs,
    detector: UnknownDetector,
    *,
    key_added: str = "cellformer",
    batch_size: int = 256,
    values: dict[str, Any] | None = None,
    extra_params: dict[str, Any] | None = None,
) -> None:
    """Write predictions into ``adata`` (in place) under ``key_added``.

    Cells with no expressed model gene (``cells.no_genes``) are flagged unknown. ``values`` (from
    :func:`check_input_values`) is recorded as ``params['input']``; ``extra_params`` are added to
    ``params`` (e.g. the shard a piece of a file is).
    """
    outputs, overlap, no_genes = cells.outputs, cells.overlap, cells.no_genes
    import pandas as pd

    from cellformer.calibration.temperature import softmax
    from cellformer.provenance import cellformer_version, package_versions

    if outputs.logits.shape[0] != adata.n_obs:
        raise ValueError(f"{outputs.logits.shape[0]} predictions for {adata.n_obs} cells")
    temperature = detector.temperature
    proba = softmax(outputs.logits, temperature).astype(np.float32)
    best = proba.argmax(axis=1) if len(proba) else np.zeros(0, np.int64)
    classes = list(model.classes)
    scores = np.array(cells.scores, dtype=np.float64)  # a copy: cells without genes are set to inf below
    if detector.calibrated:
        scores[no_genes] = np.inf  # nothing to classify them by: above any threshold
    unknown = (scores > detector.threshold) | no_genes
    in_training = np.asarray(cells.in_training, bool)
    if in_training.any() and detector.calibrated:
        others = unknown[~in_training]
        logger.warning(
            "%d of the %d cells are the run's own training cells (the same values over its genes): the "
            "unknown score is calibrated for new cells and flags %.0f%% of these against %s of the others; "
            "read %s_unknown on the other cells",
            int(in_training.sum()),
            adata.n_obs,
            100 * unknown[in_training].mean(),
            f"{100 * others.mean():.0f}%" if len(others) else "none",
            key_added,
        )
    if no_genes.any():
        logger.warning(
            "%d cells express none of the model's genes (empty rows or no gene in the vocabulary): "
            "flagged unknown (%s_unknown); their predicted label carries no information",
            int(no_genes.sum()),
            key_added,
        )
    existing = [
        f"{where}['{key}']"
        for where, keys, names in (
            ("obs", adata.obs.columns, ("prediction", "confidence", "unknown", "unknown_score")),
            ("obsm", adata.obsm.keys(), ("proba",)),
        )
        for key in (f"{key_added}_{n}" for n in names)
        if key in keys
    ]
    existing += [
        f"{w}['{k}']"
        for w, k in (("obsm", f"X_{key_added}"), ("uns", key_added))
        if k in (adata.obsm if w == "obsm" else adata.uns)
    ]
    if existing:
        logger.warning(
            "the AnnData already has %s: replacing them (choose another key_added / --key-added to keep both)",
            ", ".join(existing),
        )
    adata.obs[f"{key_added}_prediction"] = pd.Categorical.from_codes(best, categories=classes)
    adata.obs[f"{key_added}_confidence"] = proba.max(axis=1) if len(proba) else np.zeros(0, np.float32)
    adata.obs[f"{key_added}_unknown"] = np.asarray(unknown, dtype=bool)
    adata.obs[f"{key_added}_unknown_score"] = scores.astype(np.float32)
    adata.obsm[f"{key_added}_proba"] = proba
    if outputs.embeddings is not None:
        adata.obsm[f"X_{key_added}"] = np.asarray(outputs.embeddings, dtype=np.float32)
    params: dict[str, Any] = {
        "run_dir": str(Path(model.run_dir).resolve()),
        "kind": model.kind,
        "batch_size": int(batch_size),
        "gene_overlap": {k: (float(v) if k == "fraction" else int(v)) for k, v in overlap.items()},
        "temperature": float(temperature),
        "calibration": _calibration_params(detector),
        "n_no_genes": int(no_genes.sum()),
        "n_training_cells": int(in_training.sum()),  # input cells that are the run's training cells
        **({} if values is None else {"input": _input_params(values)}),
        "embedding": model.embedding_name,
        "cellformer_version": cellformer_version(),
        "versions": {k: v for k, v in package_versions().items() if k != "platform"},
    }
    record = RunInput.of(model.config)
    params["tokenizer"] = record.tokenizer
    params["label_key"] = record.label_key
    params["unknown"] = unknown_params(detector, scores[~no_genes], key_added)
    params["unknown"]["flagged_fraction"] = float(np.mean(unknown)) if len(unknown) else 0.0
    params.update(extra_params or {})
    adata.uns[key_added] = {"classes": np.array(classes, dtype=object), "params": params}
    n_unknown = int(np.sum(unknown))
    logger.info(
        "%d cells annotated by %s run %s; %d (%.1f%%) flagged unknown; %s; %s",
        adata.n_obs,
        model.kind,
        model.run_dir,
        n_unknown,
        100 * n_unknown / max(adata.n_obs, 1),
        calibration_note(params),
        unknown_note(params),
    )


def unknown_params(detector: UnknownDetector, scores: np.ndarray, key_added: str) -> dict[str, Any]:
    """``params['unknown']``: the rule (score, threshold, FPR target, a weighted score's part weights)
    and the scores' quantiles."""
    if not detector.calibrated:
        return {
            "method": "none",
            "score_key": f"{key_added}_unknown_score",
            "rule": "no validation cells: only cells with no expressed model gene are flagged "
            "(the score is NaN: nothing to set a threshold on)",
        }
    return {
        "method": detector.method,
        "score": detector.method,
        "score_key": f"{key_added}_unknown_score",
        "score_description": f"{detector.description} (higher = less like any training type)",
        "space": detector.space,
        "threshold": float(detector.threshold),
        "quantile": float(detector.quantile),
        "fpr_target": float(detector.fpr_target),
        "val_flagged_fraction": float(detector.info.get("val_flagged_fraction", float("nan"))),
        "rule": f"{key_added}_unknown_score above {detector.threshold:.6g}, the {detector.quantile:g} quantile "
        f"of the validation cells' scores (validation cells are all of known types: about "
        f"{100 * detector.fpr_target:.0f}% of cells of known types are flagged by design), "
        "or no expressed model gene",
        "score_quantiles": score_quantiles(scores),
        # a holdout score's weights: score = sum of weight x (part - validation median) / IQR - offset
        **({"part_weights": dict(detector.settings["weights"])} if "weights" in detector.settings else {}),
    }


def unknown_note(params: dict[str, Any]) -> str:
    """One phrase on the unknown score: its name, distribution and threshold (for summaries)."""
    rule = params.get("unknown", {})
    if rule.get("method", "none") == "none" or "score_quantiles" not in rule:
        return "no unknown score (run without validation cells)"
    shown = ", ".join(f"{int(k[1:])}% {v:.3g}" for k, v in rule["score_quantiles"].items())
    return (
        f"unknown score {rule['score']} (higher = less like any training type): {shown}; "
        f"threshold {rule['threshold']:.3g} (flags {100 * rule['fpr_target']:.0f}% of validation cells)"
    )


def _input_params(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "matrix": str(values["matrix"]),
        "input_normalized": bool(values["input_normalized"]),
        "input_transform": str(values["input_transform"]),
        "transform_applied": str(values["transform"]),
        "max_value": float(values["max_value"]),
        "trained_on": str(values.get("trained_on", "")),
    }


def _calibration_params(detector: UnknownDetector) -> dict[str, Any]:
    fit = detector.temperature_fit
    return {
        "calibrated": detector.calibrated,
        "temperature": float(detector.temperature),
        "decision": fit.decision,
        "fitted_temperature": float(fit.fitted),
        "n_val_cells": int(fit.n_cells),
    }


def calibration_note(params: dict[str, Any]) -> str:
    """One phrase on how confidence was calibrated (for summaries)."""
    cal = params.get("calibration", {})
    if not cal.get("calibrated", True):
        return "run has no validation cells: confidence NOT calibrated (T=1), no unknown-type flag"
    return f"confidence calibrated on {cal.get('n_val_cells', '?')} validation cells (T={cal['temperature']:.2f})"
