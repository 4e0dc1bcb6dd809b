"""Are unknown cell types caught? Leave-one-type-out on the labelled datasets, every unknown score.

For each labelled dataset in ``../shared/data`` and each cell type with at least ``--min-cells`` cells
(``--quick``: a few of them, evenly spaced by size) this script

1. writes the dataset **without that type** and prepares it with ``cellformer.prepare``'s defaults (QC,
   the 70/15/15 split): the withheld type is in neither the training nor the validation cells;
2. trains the transformer with ``cellformer.train``'s **defaults** (seed 0; ``--set KEY=VALUE`` changes an
   option) and fits the ``logreg`` baseline on exactly the same cells;
3. builds a query of **all the withheld type's cells** plus the prepared **test** cells (known types),
   and scores it with every unknown score of :mod:`cellformer.calibration.scores`, each fitted on the run's
   training cells and thresholded at the ``--quantile`` (the shipped 0.91) of its validation cells'
   scores, i.e. a 9 % false-positive target on known cells (validation cells hold no novel type, so that is the only
   honest way to set a threshold);
4. reports per withheld type and averaged: each score's AUROC (withheld vs known query cells), its TPR
   (withheld cells flagged) and FPR (known cells flagged) at that threshold, and the known query cells'
   macro-F1 - for the transformer and logreg in the same run. ``shipped`` is the score the run itself
   stores (``cellformer.calibration.unknown.DEFAULT_METHOD``) and ``predict`` writes; its flags are checked to be
   the ones this script computes.

Distance scores measure the representation the run's detector uses: the transformer's ``<CLS>``
embedding, logreg's logits (each method's ``unknown_space``); for logreg the same scores on its PCA
embedding are reported too (``@pca``).

``--expression-only`` (model-free): steps 1 and 3 as above, but **no model is trained**. The unknown
scores the transformer runs use (their ``space`` is ``"expression"``: :func:`fit_expression_space` /
:func:`expression_features` of :mod:`cellformer.calibration.scores`, fitted on the prepared training
cells' expression read as ``cellformer.calibration.run`` reads it, ``PreparedExpression``) are fitted and
thresholded at validation quantiles exactly as above, for ``holdout_mahalanobis_density`` (the model-free
part of the default, ``DEFAULT_METHOD``, and the default of one-model runs), ``mahalanobis``, ``density``
and ``mahalanobis_density`` (the earlier defaults), plus ``mahalanobis@hvg2000``: ``mahalanobis`` in the
space before round 2 (``EXPRESSION_HVG`` set to 2,000 for that fit). A one-model run's unknown flag depends
only on this expression space, not on the model, so this measures its shipped flag on the same cells (an
ensemble's adds the members' disagreement, which needs the models); known-cell macro-F1 needs a model and
is not reported in this mode. All 54 withheld types of the five datasets take a few minutes on 2 cores.

Usage::

    python bench/unknown.py --quick --threads 2        # pbmc68k + bladder, 5 withheld types (< 15 min)
    python bench/unknown.py --threads 2                # every type >= 30 cells of 5 datasets (many hours)
    python bench/unknown.py --datasets pbmc68k --types "CD19+ B" --record /tmp/unknown.jsonl
    python bench/unknown.py --expression-only --record /tmp/unknown.jsonl   # model-free, all 54 types (minutes)

Prepared datasets and runs are cached in ``--work`` (keyed by dataset, withheld type and options).
``--record FILE`` appends one JSON line per (dataset, withheld type, model) as soon as it is measured
(``--expression-only``: one per (dataset, withheld type), with ``"mode": "expression-only"`` and
``"model": "none"``); ``--resume`` skips what the file already holds, so a stopped run continues where it
was. ``--markdown FILE`` tabulates both kinds of record, each in its own tables. Datasets run
in the order ``--datasets`` gives them. Besides the run's own threshold, every score's TPR / FPR is
recorded with the threshold at each validation FPR target in ``FPR_TARGETS`` (0.01 / 0.05 / 0.09 / 0.10, i.e.
the 0.99 / 0.95 / 0.91 / 0.90 quantile of its validation cells' scores: ``at_fpr``), so one run shows the
whole trade-off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from labelled_data import DATA, DATASETS, Dataset, parse_value, prepared_digest, recalibrated, run_digest

LABEL_KEY = "cell_type"

QUICK = {"pbmc68k": 3, "bladder": 2}  # dataset -> withheld types in --quick
MODELS = ("transformer", "logreg")
FPR_TARGETS = (0.01, 0.05, 0.09, 0.10)  # validation FPR targets: the 0.99 / 0.95 / 0.91 / 0.90 quantiles
EXPRESSION_MODE = "expression-only"  # the record's "mode" in --expression-only (model-free) runs
# in today's expression space (the first: the model-free part of the default score)
EXPRESSION_SCORES = ("holdout_mahalanobis_density", "mahalanobis", "density", "mahalanobis_density")
OLD_HVG = 2000  # the expression space's HVGs before round 2 (issue 13)
OLD_SCORE = f"mahalanobis@hvg{OLD_HVG}"  # the score shipped before: mahalanobis over 2,000 HVGs


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "type"


def eligible_types(labels: np.ndarray, min_cells: int) -> list[str]:
    """Types with at least ``min_cells`` cells, largest first (ties by name)."""
    names, counts = np.unique(labels.astype(str), return_counts=True)
    order = sorted(zip(names, counts, strict=True), key=lambda nc: (-nc[1], nc[0]))
    return [str(n) for n, c in order if c >= min_cells]


def evenly_spaced(types: list[str], n: int) -> list[str]:
    if n >= len(types):
        return types
    picks = np.unique(np.round(np.linspace(0, len(types) - 1, n)).astype(int))
    return [types[i] for i in picks]


def rates_at_targets(
    scores: np.ndarray,
    withheld_mask: np.ndarray,
    always_flagged: np.ndarray,
    val_scores: np.ndarray,
    targets: tuple[float, ...] = FPR_TARGETS,
) -> dict[str, dict[str, float]]:
    """TPR / FPR on the query with the threshold at the ``1 - target`` quantile of ``val_scores``.

    Keyed by the target as text (``"0.01"``, JSON-safe); each entry: ``threshold``, ``tpr`` (withheld
    query cells flagged), ``fpr`` (known query cells flagged), ``val_fpr`` (validation cells flagged: the
    target, up to ties and ``1 / n_val``). ``always_flagged``: cells flagged whatever the score (no
    expressed model gene). The same rule as :meth:`cellformer.calibration.unknown.UnknownDetector.with_quantile`.
    """
    val_scores = np.asarray(val_scores, dtype=np.float64)
    out = {}
    for target in targets:
        threshold = float(np.quantile(val_scores, 1.0 - target))
        flagged = (scores > threshold) | always_flagged
        out[f"{target:g}"] = {
            "threshold": threshold,
            "tpr": float(flagged[withheld_mask].mean()),
            "fpr": float(flagged[~withheld_mask].mean()),
            "val_fpr": float(np.mean(val_scores > threshold)),
        }
    return out


# -- one withheld type ---------------------------------------------------------------------------
def prepare_without(adata, dataset: Dataset, withheld: str, work: Path) -> Path:
    """Prepared dataset of ``adata`` without the ``withheld`` cells (cached)."""
    import cellformer

    out = work / dataset.name / slug(withheld) / f"prepared-{prepared_digest(dataset.options)}"
    if (out / "meta.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    source = out.parent / f"{dataset.name}_without_{slug(withheld)}.h5ad"
    keep = adata.obs[LABEL_KEY].astype(str).to_numpy() != withheld
    adata[keep].copy().write_h5ad(source)
    cellformer.prepare(source, out=out, overwrite=True, label_key=LABEL_KEY, **dataset.options)
    return out


def trained_run(prepared: Path, model: str, train_options: dict[str, Any]) -> Path:
    """The cached run, its stored unknown detector refitted if it is not today's default."""
    return recalibrated(_trained_run(prepared, model, train_options), prepared)


def _trained_run(prepared: Path, model: str, train_options: dict[str, Any]) -> Path:
    import cellformer

    if model == "logreg":
        run = prepared / "baseline-logreg"
        if not (run / "config.json").exists():
            cellformer.baseline(prepared, method="logreg", out=run, overwrite=True)
        return run
    run = prepared / f"transformer-{run_digest(train_options)}-seed0"
    if not (run / "model.safetensors").exists():
        if run.exists():
            import shutil

            shutil.rmtree(run)
        started = time.perf_counter()
        cellformer.train(prepared, out=run, seed=0, progress_bar=False, **train_options)
        (run / "bench_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    return run


def query_cells(adata, prepared: Path, withheld: str):
    """All ``withheld`` cells of the file plus the prepared test cells; and which are withheld."""
    import pandas as pd

    cells = pd.read_csv(prepared / "cells.csv.gz")
    test_names = cells.loc[cells["split"] == "test", "obs_name"].astype(str).to_numpy()
    is_withheld = adata.obs[LABEL_KEY].astype(str).to_numpy() == withheld
    position = pd.Index(adata.obs_names)
    rows = np.r_[np.flatnonzero(is_withheld), position.get_indexer(test_names)]
    if (rows < 0).any():
        raise RuntimeError(f"{prepared}: test cells missing from the source file")
    query = adata[rows].copy()
    return query, np.r_[np.ones(is_withheld.sum(), bool), np.zeros(len(test_names), bool)]


def evaluate(
    run: Path,
    prepared: Path,
    query,
    withheld_mask: np.ndarray,
    quantile: float,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Every score's AUROC / TPR / FPR on the query, the known cells' macro-F1, the shipped flag.

    ``only``: measure just these scores, in the run's own space, and the run's shipped one."""
    from sklearn.metrics import f1_score, roc_auc_score

    import cellformer
    from cellformer.calibration.scores import FEATURE_SCORES, MEMBER_SCORES, SCORES
    from cellformer.calibration.unknown import DEFAULT_METHOD, UnknownDetector, method_for
    from cellformer.data.align import pinned_transform
    from cellformer.prediction.outputs import check_input_values, expression_coordinates, model_outputs
    from cellformer.preparation.expression import PreparedExpression
    from cellformer.preparation.prepared import PreparedData
    from cellformer.runs import load

    model = load(run)
    data = PreparedData(prepared)
    labels = np.asarray(data.labels)
    n_classes = len(model.classes)
    splits = {s: model.predict_split(data, s) for s in ("train", "val")}
    values = check_input_values(model, query)
    options = pinned_transform(values)
    outputs, _, no_genes = model_outputs(model, query, **options)
    space = model.unknown_space
    others = [o for o in ("expression", "embedding", "logits") if o != space]
    if model.is_baseline:  # a baseline's embedding is the expression PCA already
        others = [o for o in ("logits", "embedding") if o != space]
    heads = model.member_heads  # an ensemble's: the member scores (skipped for one model)
    names = [name for name in SCORES if heads is not None or name not in MEMBER_SCORES]
    if only:
        names = [n for n in names if n in only or n == method_for(DEFAULT_METHOD, heads)]
        others = []
    variants = [(name, space) for name in names] + [
        (n, o) for o in others for n in FEATURE_SCORES if n in names
    ]
    reader = PreparedExpression(data)
    expression = (reader.read(splits["train"].rows), reader.read(splits["val"].rows))
    tags = {
        "expression": "expr",
        "logits": "logits",
        "embedding": "cls" if model.kind == "transformer" else "pca",
    }
    scores: dict[str, dict[str, float]] = {}
    for name, where in variants:
        detector = UnknownDetector.fit(
            *[(p.logits, p.embeddings, labels[p.rows]) for p in (splits["train"], splits["val"])],
            n_classes,
            quantile=quantile,
            space=where,
            method=name,
            expression=expression,
            heads=heads,
        )
        coordinates = (
            expression_coordinates(model, query, detector, **options) if detector.needs_expression else None
        )
        s = detector.scores(outputs.logits, outputs.embeddings, coordinates)
        flagged = (s > detector.threshold) | no_genes
        key = name if where == space or name not in FEATURE_SCORES else f"{name}@{tags[where]}"
        scores[key] = {
            "auroc": float(roc_auc_score(withheld_mask, s)),
            "tpr": float(flagged[withheld_mask].mean()),
            "fpr": float(flagged[~withheld_mask].mean()),
            "val_fpr": float(detector.info["val_flagged_fraction"]),
            "at_fpr": rates_at_targets(s, withheld_mask, no_genes, detector.val_scores),
        }
    # the run's own stored detector, through cellformer.predict: the flag users get
    annotated = cellformer.predict(query, run)
    shipped_flag = annotated.obs["cellformer_unknown"].to_numpy()
    stored = UnknownDetector.load(run)
    coordinates = expression_coordinates(model, query, stored, **options) if stored.needs_expression else None
    expected = (stored.scores(outputs.logits, outputs.embeddings, coordinates) > stored.threshold) | no_genes
    known = ~withheld_mask
    truth = query.obs[LABEL_KEY].astype(str).to_numpy()[known]
    predicted = annotated.obs["cellformer_prediction"].astype(str).to_numpy()[known]
    return {
        "shipped": stored.method,
        "shipped_space": stored.space,
        "default": DEFAULT_METHOD,
        "shipped_matches": bool(np.array_equal(shipped_flag, expected)),
        "shipped_tpr": float(shipped_flag[withheld_mask].mean()),
        "shipped_fpr": float(shipped_flag[known].mean()),
        "known_macro_f1": float(f1_score(truth, predicted, labels=sorted(set(truth)), average="macro")),
        "scores": scores,
    }


@contextlib.contextmanager
def expression_hvg(n_hvg: int):
    """``cellformer.calibration.scores.EXPRESSION_HVG`` set to ``n_hvg`` inside the block (the space before
    round 2 had 2,000 HVGs); restored afterwards."""
    from cellformer.calibration import scores as module

    saved = module.EXPRESSION_HVG
    module.EXPRESSION_HVG = int(n_hvg)
    try:
        yield
    finally:
        module.EXPRESSION_HVG = saved


def evaluate_expression(prepared: Path, query, withheld_mask: np.ndarray, quantile: float) -> dict[str, Any]:
    """Model-free: the expression-space unknown scores' AUROC / TPR / FPR on the query.

    The expression space and each score are fitted as a transformer run's calibration fits them
    (``UnknownDetector.fit`` with ``space="expression"``): the space on the prepared training cells'
    expression (``PreparedExpression``), the score on their coordinates and labels (a combination's
    median / IQR on the validation cells'), the score's state rounded to float32 as a run stores it, the
    threshold at the ``quantile`` of the validation cells' scores. Query cells are aligned to the prepared
    vocabulary as ``predict`` aligns them (the prepared dataset's input options); cells expressing no
    vocabulary gene are always flagged, as ``predict`` flags them. Scores: ``EXPRESSION_SCORES`` in
    today's space (``EXPRESSION_HVG`` HVGs) and ``OLD_SCORE`` (``mahalanobis`` over ``OLD_HVG`` HVGs).
    """
    from sklearn.metrics import roc_auc_score

    from cellformer.calibration import scores as module
    from cellformer.calibration.unknown import DEFAULT_METHOD, method_for
    from cellformer.data.align import aligned_matrix, training_input_options
    from cellformer.preparation.expression import PreparedExpression
    from cellformer.preparation.prepared import PreparedData

    data = PreparedData(prepared)
    labels = np.asarray(data.labels)
    n_classes = data.n_classes
    train_rows = data.split_rows("train")
    val_rows = data.split_rows("val")
    val_rows = val_rows[(labels[val_rows] >= 0) & (labels[val_rows] < n_classes)]
    reader = PreparedExpression(data)
    X_train, X_val = reader.read(train_rows), reader.read(val_rows)
    # read the query as predict reads a run's input: the options the prepared data was made with
    options = training_input_options({"prepared": {"meta": data.meta}})
    X_query, _ = aligned_matrix(query, list(data.genes), **options, where="the query")
    no_genes = np.asarray((X_query > 0).sum(axis=1)).ravel() == 0
    y_train = labels[train_rows]
    spaces = [(module.EXPRESSION_HVG, EXPRESSION_SCORES, ""), (OLD_HVG, ("mahalanobis",), f"@hvg{OLD_HVG}")]
    scores: dict[str, dict[str, Any]] = {}
    n_hvg: dict[str, int] = {}
    for hvg, names, suffix in spaces:
        with expression_hvg(hvg):
            state = module.fit_expression_space(X_train)
        n_hvg[f"hvg{hvg}"] = int(len(state[f"{module.EXPRESSION_PREFIX}hvg_index"]))
        train, val, cells = (module.expression_features(state, X) for X in (X_train, X_val, X_query))
        for name in names:
            no_logits = np.zeros((len(val), n_classes))  # these scores read no logits
            fitted, settings = module.fit_score(
                name, train, y_train, n_classes, val=(no_logits, val, None), y_val=labels[val_rows]
            )
            fitted = {k: np.asarray(a, np.float32).astype(np.float64) for k, a in fitted.items()}
            val_scores = module.score(name, fitted, settings, no_logits, val)
            s = module.score(name, fitted, settings, np.zeros((len(cells), n_classes)), cells)
            threshold = float(np.quantile(val_scores, quantile))
            flagged = (s > threshold) | no_genes
            scores[name + suffix] = {
                "auroc": float(roc_auc_score(withheld_mask, s)),
                "tpr": float(flagged[withheld_mask].mean()),
                "fpr": float(flagged[~withheld_mask].mean()),
                "val_fpr": float(np.mean(val_scores > threshold)),
                "threshold": threshold,
                "at_fpr": rates_at_targets(s, withheld_mask, no_genes, val_scores),
            }
    return {
        "space": "expression",
        "default": method_for(DEFAULT_METHOD, None),  # the model-free part of the default score
        "n_genes": len(data.genes),
        "n_hvg": n_hvg,  # genes each space used (at most EXPRESSION_HVG / OLD_HVG: the expressed ones)
        "n_train": int(len(train_rows)),
        "n_val": int(len(val_rows)),
        "n_no_genes": int(no_genes.sum()),
        "known_macro_f1": None,  # needs a model: not measured in this mode
        "scores": scores,
    }


def measure_expression_only(
    adata, dataset: Dataset, withheld: str, work: Path, quantile: float
) -> dict[str, Any]:
    """One ``--expression-only`` record: prepare without ``withheld`` (cached in ``work``), no model,
    :func:`evaluate_expression` on the withheld cells + the prepared test cells."""
    clock = time.perf_counter()
    prepared = prepare_without(adata, dataset, withheld, work)
    query, mask = query_cells(adata, prepared, withheld)
    prepare_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    result = evaluate_expression(prepared, query, mask, quantile)
    return {
        "dataset": dataset.name,
        "withheld": withheld,
        "model": "none",
        "mode": EXPRESSION_MODE,
        "settings": [],
        "quantile": quantile,
        "n_withheld": int(mask.sum()),
        "n_known": int((~mask).sum()),
        "result": result,
        "seconds": {"prepare": round(prepare_seconds, 1), "evaluate": round(time.perf_counter() - clock, 1)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def expression_names(records: list[dict[str, Any]]) -> list[str]:
    """The scores of ``--expression-only`` records, the default first, the old score last."""
    present = [n for n in records[0]["result"]["scores"] if all(n in r["result"]["scores"] for r in records)]
    default = records[0]["result"]["default"]
    return sorted(present, key=lambda n: (n != default, n == OLD_SCORE, present.index(n)))


def expression_label(name: str, default: str) -> str:
    if name == default:
        return f"{name} (default)"
    if name == OLD_SCORE:
        return f"mahalanobis, {OLD_HVG} HVGs (default before)"
    if name == "mahalanobis":
        return "mahalanobis (new space)"
    return name


def expression_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per score, per dataset (in record order) then ``"all"``: types, mean / min AUROC, mean TPR / FPR at
    the record's quantile and at each validation FPR target."""
    names = expression_names(records)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["dataset"], []).append(r)
    if len(groups) > 1:
        groups["all"] = records
    rows = []
    for name in names:
        for dataset, group in groups.items():
            entries = [g["result"]["scores"][name] for g in group]
            rows.append(
                {
                    "score": name,
                    "dataset": dataset,
                    "types": len(group),
                    "auroc": statistics.mean(e["auroc"] for e in entries),
                    "min_auroc": min(e["auroc"] for e in entries),
                    "tpr": statistics.mean(e["tpr"] for e in entries),
                    "fpr": statistics.mean(e["fpr"] for e in entries),
                    "at_fpr": target_averages(entries),
                }
            )
    return rows


def expression_line(record: dict[str, Any], names: list[str]) -> str:
    scores = record["result"]["scores"]
    aurocs = " ".join(f"{scores[n]['auroc']:>9.3f}" for n in names)
    default, old = scores[names[0]], scores.get(OLD_SCORE, scores[names[0]])
    return (
        f"{record['dataset']:<9} {record['withheld'][:22]:<22} {record['n_withheld']:>5} {record['n_known']:>5} "
        f"{aurocs}   {default['tpr']:>5.3f} {default['fpr']:>5.3f}   {old['tpr']:>5.3f} {old['fpr']:>5.3f}"
    )


def expression_summary(records: list[dict[str, Any]], quantile: float) -> list[str]:
    if not records:
        return []
    default = records[0]["result"]["default"]
    lines = [
        "",
        f"expression-only (no model; known-cell macro-F1 needs one and is not reported): averaged over "
        f"withheld types, AUROC (min); TPR / FPR at the {quantile:g} validation quantile; then TPR/FPR with "
        "the threshold at each validation FPR target:",
    ]
    for row in expression_rows(records):
        name = expression_label(row["score"], default)
        lines.append(
            f"  {name[:40]:<40} {row['dataset']:<9} {row['types']:>3} types  AUROC {row['auroc']:.3f} "
            f"(min {row['min_auroc']:.3f})  TPR {row['tpr']:.3f}  FPR {row['fpr']:.3f}  "
            f"{targets_text(row['at_fpr'])}"
        )
    return lines


def expression_markdown(records: list[dict[str, Any]]) -> str:
    """The docs tables of ``--expression-only`` records: per score and dataset, then per withheld type the
    default against the score shipped before."""
    default = records[0]["result"]["default"]
    names = expression_names(records)
    targets = [
        t
        for t in FPR_TARGETS
        if all(f"{t:g}" in r["result"]["scores"][n].get("at_fpr", {}) for r in records for n in names)
    ]
    rates = [f"{what} @{100 * t:g}%" for t in targets for what in ("TPR", "FPR")]
    lines = [
        "| score | dataset | types | mean AUROC | min AUROC | " + " | ".join(rates) + " |",
        "| --- | --- |" + " ---: |" * (3 + len(rates)),
    ]
    for row in expression_rows(records):
        name = expression_label(row["score"], default)
        name = f"**{name}**" if row["score"] == default else name
        dataset = "**all**" if row["dataset"] == "all" else row["dataset"]
        cells = [name, dataset, str(row["types"]), f"{row['auroc']:.3f}", f"{row['min_auroc']:.3f}"]
        cells += [_rate(row["at_fpr"], t, k) for t in targets for k in ("tpr", "fpr")]
        lines.append("| " + " | ".join(cells) + " |")
    old = OLD_SCORE if OLD_SCORE in names else None
    pair = [default] + ([old] if old else [])
    head = ["dataset", "withheld type", "new cells", "known cells"]
    for n in pair:
        tag = "default" if n == default else "before"
        head += [f"AUROC {tag}"] + [
            f"{what} @{100 * t:g}% {tag}" for t in targets if t != 0.01 for what in ("TPR", "FPR")
        ]
    lines += ["", "| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for r in records:
        cells = [r["dataset"], r["withheld"], str(r["n_withheld"]), str(r["n_known"])]
        for n in pair:
            entry = r["result"]["scores"][n]
            cells += [f"{entry['auroc']:.3f}"]
            cells += [_rate(entry["at_fpr"], t, k) for t in targets if t != 0.01 for k in ("tpr", "fpr")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- output ----------------------------------------------------------------------------------------
SHORT = {
    "centroid_distance": "centroid",
    "mahalanobis": "mahal",
    "knn_distance": "knn",
    "energy": "energy",
    "max_probability": "msp",
    "combined": "comb",
    "density": "density",
    "mahalanobis_density": "maha+dens",
    "disagreement": "disagree",
    "mahalanobis_density_disagreement": "m+d+dis",
    "holdout_mahalanobis_density": "ho(m+d)",
    "holdout_mahalanobis_density_disagreement": "ho(m+d)+dis",
    OLD_SCORE: f"mahal{OLD_HVG}",
}


def row_line(record: dict[str, Any], names: list[str]) -> str:
    r = record["result"]
    aurocs = " ".join(  # "-": a score this model has not (the member scores of one model)
        f"{r['scores'][n]['auroc']:>8.3f}" if n in r["scores"] else f"{'-':>8}" for n in names
    )
    return (
        f"{record['dataset']:<9} {record['withheld'][:22]:<22} {record['model']:<11} {record['n_withheld']:>5} "
        f"{record['n_known']:>5} {r['known_macro_f1']:>6.3f} {aurocs}   "
        f"{r['shipped_tpr']:>5.3f} {r['shipped_fpr']:>5.3f}"
    )


def score_averages(mine: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per score over one model's withheld types: mean and min AUROC, mean TPR / FPR at the run's
    threshold and (``at_fpr``, where every record has them) at each validation FPR target; best AUROC
    first."""
    rows = []
    for name in [n for n in mine[0]["scores"] if all(n in m["scores"] for m in mine)]:
        auroc = [m["scores"][name]["auroc"] for m in mine]
        rows.append(
            {
                "name": name,
                "auroc": statistics.mean(auroc),
                "min_auroc": min(auroc),
                "tpr": statistics.mean(m["scores"][name]["tpr"] for m in mine),
                "fpr": statistics.mean(m["scores"][name]["fpr"] for m in mine),
                "at_fpr": target_averages([m["scores"][name] for m in mine]),
                "shipped": name == mine[0]["shipped"],
            }
        )
    return sorted(rows, key=lambda row: -row["auroc"])


def target_averages(entries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean TPR / FPR per validation FPR target over score entries (``{}`` if one lacks ``at_fpr``)."""
    if not entries or any("at_fpr" not in e for e in entries):
        return {}
    targets = [t for t in entries[0]["at_fpr"] if all(t in e["at_fpr"] for e in entries)]
    return {
        t: {k: statistics.mean(e["at_fpr"][t][k] for e in entries) for k in ("tpr", "fpr")} for t in targets
    }


def targets_text(at_fpr: dict[str, dict[str, float]]) -> str:
    return "  ".join(f"@{100 * float(t):g}%: {r['tpr']:.3f}/{r['fpr']:.3f}" for t, r in at_fpr.items())


def dataset_averages(records: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """The shipped score per dataset (in record order) for ``model``, then ``"all"``: withheld types,
    mean AUROC, mean TPR / FPR at the run's threshold and at each validation FPR target."""
    mine = [r for r in records if r["model"] == model]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in mine:
        groups.setdefault(r["dataset"], []).append(r)
    if len(groups) > 1:
        groups["all"] = mine
    rows = []
    for name, group in groups.items():
        entries = [g["result"]["scores"][g["result"]["shipped"]] for g in group]
        rows.append(
            {
                "dataset": name,
                "types": len(group),
                "auroc": statistics.mean(e["auroc"] for e in entries),
                "tpr": statistics.mean(g["result"]["shipped_tpr"] for g in group),
                "fpr": statistics.mean(g["result"]["shipped_fpr"] for g in group),
                "at_fpr": target_averages(entries),
                "known_macro_f1": statistics.mean(g["result"]["known_macro_f1"] for g in group),
            }
        )
    return rows


def summary(records: list[dict[str, Any]], quantile: float) -> list[str]:
    lines = [
        "",
        f"averaged over withheld types (AUROC; TPR / FPR at the {quantile:g} validation quantile = "
        f"{100 * (1 - quantile):.0f}% FPR target; then TPR/FPR with the threshold at each validation "
        "FPR target):",
    ]
    for model in MODELS:
        mine = [r["result"] for r in records if r["model"] == model]
        if not mine:
            continue
        f1 = statistics.mean(r["known_macro_f1"] for r in mine)
        lines.append(f"  {model} ({len(mine)} withheld types; known macro-F1 {f1:.3f}):")
        for row in score_averages(mine):
            mark = "  <- shipped" if row["shipped"] else ""
            lines.append(
                f"    {row['name']:<22} AUROC {row['auroc']:.3f} (min {row['min_auroc']:.3f})  "
                f"TPR {row['tpr']:.3f}  FPR {row['fpr']:.3f}  {targets_text(row['at_fpr'])}{mark}"
            )
        lines.append(f"  {model}, shipped score per dataset:")
        for row in dataset_averages(records, model):
            lines.append(
                f"    {row['dataset']:<9} {row['types']:>3} types  AUROC {row['auroc']:.3f}  "
                f"TPR {row['tpr']:.3f}  FPR {row['fpr']:.3f}  {targets_text(row['at_fpr'])}"
            )
    return lines


def markdown(records: list[dict[str, Any]]) -> str:
    """The docs tables: per dataset / withheld type / model, then averages per score (``--expression-only``
    records in their own tables, after the others')."""
    if not records:
        return "(no records)"
    free = [r for r in records if r.get("mode") == EXPRESSION_MODE]
    if free:
        trained = [r for r in records if r.get("mode") != EXPRESSION_MODE]
        return "\n\n".join(([markdown(trained)] if trained else []) + [expression_markdown(free)])
    first = records[0]["result"]
    shipped = first["shipped"]
    main_scores = list(first["scores"])[:6]
    head = ["dataset", "withheld type", "model", "new cells", "known cells", "known macro-F1"]
    head += [f"AUROC {SHORT.get(n, n)}" for n in main_scores] + [f"TPR ({shipped})", f"FPR ({shipped})"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * 3 + " ---: |" * (len(head) - 3)]
    for r in records:
        res = r["result"]
        model = f"{r['model']} ({res.get('shipped_space', '')})"
        cells = [r["dataset"], r["withheld"], model, str(r["n_withheld"]), str(r["n_known"])]
        cells.append(f"{res['known_macro_f1']:.3f}")
        cells += [f"{res['scores'][n]['auroc']:.3f}" if n in res["scores"] else "" for n in main_scores]
        cells += [f"{res['shipped_tpr']:.3f}", f"{res['shipped_fpr']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | score | mean AUROC | min AUROC | mean TPR | mean FPR | types |",
        "| --- | --- |" + " ---: |" * 5,
    ]
    for model in MODELS:
        mine = [r["result"] for r in records if r["model"] == model]
        if not mine:
            continue
        for row in score_averages(mine):
            label = f"**{row['name']}** (shipped)" if row["shipped"] else row["name"]
            lines.append(
                f"| {model} | {label} | {row['auroc']:.3f} | {row['min_auroc']:.3f} | {row['tpr']:.3f} | "
                f"{row['fpr']:.3f} | {len(mine)} |"
            )
    targets = [t for t in FPR_TARGETS if all(f"{t:g}" in _shipped(r).get("at_fpr", {}) for r in records)]
    if not targets:
        return "\n".join(lines)
    rates = [f"{what} @{100 * t:g}%" for t in targets for what in ("TPR", "FPR")]
    lines += [
        "",
        "The shipped score with the threshold at each validation FPR target (the 0.99 / 0.95 / 0.91 / 0.90 "
        "quantile of its validation cells' scores): TPR (withheld cells flagged) and FPR (known query "
        "cells flagged).",
        "",
        "| dataset | withheld type | model | AUROC | " + " | ".join(rates) + " |",
        "|" + " --- |" * 3 + " ---: |" * (1 + len(rates)),
    ]
    for r in records:
        entry = _shipped(r)
        cells = [r["dataset"], r["withheld"], r["model"], f"{entry['auroc']:.3f}"]
        cells += [_rate(entry["at_fpr"], t, k) for t in targets for k in ("tpr", "fpr")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | dataset | types | known macro-F1 | mean AUROC | " + " | ".join(rates) + " |",
        "| --- | --- |" + " ---: |" * (3 + len(rates)),
    ]
    for model in MODELS:
        for row in dataset_averages(records, model):
            name = "**all**" if row["dataset"] == "all" else row["dataset"]
            cells = [model, name, str(row["types"]), f"{row['known_macro_f1']:.3f}", f"{row['auroc']:.3f}"]
            cells += [_rate(row["at_fpr"], t, k) for t in targets for k in ("tpr", "fpr")]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | score | " + " | ".join(rates) + " |",
        "| --- | --- |" + " ---: |" * len(rates),
    ]
    for model in MODELS:
        mine = [r["result"] for r in records if r["model"] == model]
        for row in score_averages(mine) if mine else []:
            label = f"**{row['name']}** (shipped)" if row["shipped"] else row["name"]
            cells = [model, label] + [_rate(row["at_fpr"], t, k) for t in targets for k in ("tpr", "fpr")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shipped(record: dict[str, Any]) -> dict[str, Any]:
    return record["result"]["scores"][record["result"]["shipped"]]


def _rate(at_fpr: dict[str, dict[str, float]], target: float, key: str) -> str:
    entry = at_fpr.get(f"{target:g}")
    return f"{entry[key]:.3f}" if entry else ""


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a ``--record`` file (a last line cut short by a killed run is skipped)."""
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def record_key(record: dict[str, Any]) -> tuple:
    """What makes two records the same measurement (``--resume`` skips those already recorded); an
    ``--expression-only`` record's key ends with its mode."""
    key = (
        record["dataset"],
        record["withheld"],
        record["model"],
        tuple(record.get("settings") or ()),
        record.get("quantile", 0.95),
    )
    return key + ((record["mode"],) if record.get("mode") else ())


def selected_types(adata, dataset: Dataset, args: argparse.Namespace) -> list[str]:
    """The withheld types of ``dataset`` the options ask for (largest first)."""
    types = eligible_types(adata.obs[LABEL_KEY].to_numpy(), args.min_cells)
    if args.types:
        types = [t for t in types if t in args.types]
    limit = args.max_types or (QUICK.get(dataset.name) if args.quick else None)
    return evenly_spaced(types, limit) if limit else types


def recorded(args: argparse.Namespace) -> dict[tuple, dict[str, Any]]:
    """``--resume``: the records ``--record`` already holds, by :func:`record_key`."""
    if args.resume and args.record and args.record.exists():
        return {record_key(r): r for r in read_records(args.record)}
    return {}


def append_record(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """One JSON line in ``--record`` (when given), written as soon as it is measured."""
    if args.record:
        with open(args.record, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def withheld_cases(args: argparse.Namespace, names: list[str]):
    """``(dataset, its AnnData, withheld type)`` for each selected type of the named datasets, in order."""
    import anndata as ad

    by_name = {d.name: d for d in DATASETS}
    for dataset in [by_name[name] for name in names]:
        adata = ad.read_h5ad(DATA / dataset.file)
        adata.obs_names_make_unique()
        for withheld in selected_types(adata, dataset, args):
            yield dataset, adata, withheld


def expression_only(args: argparse.Namespace) -> int:
    """``--expression-only``: every selected withheld type, no model (:func:`measure_expression_only`)."""
    warnings.filterwarnings("ignore")

    from cellformer.calibration.scores import EXPRESSION_HVG
    from cellformer.calibration.unknown import DEFAULT_METHOD, method_for

    names = args.datasets or (list(QUICK) if args.quick else [d.name for d in DATASETS])
    started = time.perf_counter()
    print(
        f"bench/unknown.py --expression-only: leave-one-type-out on {', '.join(names)}, NO model trained; "
        f"each withheld type (>= {args.min_cells} cells) is removed before prepare, the query is all its "
        "cells + the known test cells; the expression-space unknown scores (those of transformer runs) are "
        f"fitted on the prepared training cells ({EXPRESSION_HVG} HVGs at most, 50 PCs; "
        f"{OLD_SCORE}: the score shipped before, {OLD_HVG} HVGs) and thresholded at the {args.quantile:g} "
        f"quantile of validation scores; default score = {DEFAULT_METHOD}, whose model-free part "
        f"{method_for(DEFAULT_METHOD, None)} (the default of one-transformer runs) this measures; known-cell "
        "macro-F1 needs a "
        f"model: not reported; started {time.strftime('%H:%M:%S')}",
        flush=True,
    )
    header = None
    records = []
    done = recorded(args)
    for dataset, adata, withheld in withheld_cases(args, names):
        key = (dataset.name, withheld, "none", (), args.quantile, EXPRESSION_MODE)
        if key in done:
            record, note = done[key], "  (recorded)"
        else:
            record = measure_expression_only(adata, dataset, withheld, args.work, args.quantile)
            seconds = record["seconds"]
            note = f"  ({seconds['prepare']:.0f}+{seconds['evaluate']:.0f} s)"
            append_record(args, record)
        records.append(record)
        columns = expression_names([record])
        if header is None:
            header = columns
            print(
                f"{'dataset':<9} {'withheld':<22} {'n_new':>5} {'n_old':>5} "
                + " ".join(f"{SHORT.get(c, c)[:9]:>9}" for c in columns)
                + f"   {columns[0]} TPR / FPR   {OLD_SCORE} TPR / FPR",
                flush=True,
            )
            print(f"{'':<44}(AUROC withheld vs known query cells: " + ", ".join(columns) + ")")
        print(expression_line(record, header) + note, flush=True)
    for line in expression_summary(records, args.quantile):
        print(line)
    print(f"wall time {time.perf_counter() - started:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    from cellformer.calibration.scores import SCORES
    from cellformer.calibration.unknown import DEFAULT_QUANTILE

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="pbmc68k (3 types) + bladder (2 types), < 15 min"
    )
    parser.add_argument(
        "--datasets", nargs="+", choices=[d.name for d in DATASETS], help="these, in this order"
    )
    parser.add_argument("--types", nargs="+", help="withhold only these types (names as in obs cell_type)")
    parser.add_argument("--max-types", type=int, help="at most this many withheld types per dataset")
    parser.add_argument("--min-cells", type=int, default=30, help="withhold types with >= this many cells")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--scores",
        nargs="+",
        choices=SCORES,
        help="measure only these scores (in each run's own space) and the shipped one (default: every "
        "score, in every space; bladder's 15,000 genes make that minutes per withheld type)",
    )
    parser.add_argument(
        "--quantile",
        type=float,
        default=DEFAULT_QUANTILE,
        help="threshold quantile of validation scores (default: the shipped one)",
    )
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cellformer-bench-unknown"))
    parser.add_argument("--record", type=Path, help="append one JSON line per withheld type and model")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip (and summarize) the measurements already in --record (same dataset, type, model, "
        "--set and --quantile)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--markdown", type=Path, metavar="RECORD", help="only print the docs tables of a --record file"
    )
    parser.add_argument(
        "--expression-only",
        action="store_true",
        help="model-free: no training; the expression-space unknown scores (holdout_mahalanobis_density, "
        "mahalanobis, density, mahalanobis_density, and mahalanobis over 2,000 HVGs as before) on every "
        "withheld type; minutes",
    )
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(read_records(args.markdown)))
        return 0
    if args.expression_only:
        if args.settings:
            parser.error("--set changes training options: there is no training with --expression-only")
        return expression_only(args)

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels when imported: quiet them after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import torch

    from cellformer.calibration.scores import SCORES
    from cellformer.calibration.unknown import DEFAULT_METHOD

    if args.threads:
        torch.set_num_threads(args.threads)
    train_options = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --set needs KEY=VALUE, got {item!r}")
        train_options[key] = parse_value(value)
    names = args.datasets or (list(QUICK) if args.quick else [d.name for d in DATASETS])
    started = time.perf_counter()
    print(
        f"bench/unknown.py ({'quick' if args.quick else 'full'}): leave-one-type-out on {', '.join(names)}; "
        f"each withheld type (>= {args.min_cells} cells) is removed before prepare, the query is all its "
        "cells + the known test cells; every score is fitted on training cells and thresholded at the "
        f"{args.quantile:g} quantile of validation scores ({100 * (1 - args.quantile):.0f}% FPR target on "
        f"known cells); transformer = cellformer defaults{' + ' + ', '.join(args.settings) if args.settings else ''}, "
        f"seed 0, and logreg; shipped score = {DEFAULT_METHOD}; started {time.strftime('%H:%M:%S')}",
        flush=True,
    )
    columns = [SHORT[n] for n in SCORES]
    print(
        f"{'dataset':<9} {'withheld':<22} {'model':<11} {'n_new':>5} {'n_old':>5} {'F1old':>6} "
        + " ".join(f"{c:>8}" for c in columns)
        + "   shipped TPR / FPR",
        flush=True,
    )
    print(f"{'':<63}{'(AUROC withheld vs known query cells, per score)':^53}")
    records = []
    done = recorded(args)
    for dataset, adata, withheld in withheld_cases(args, names):
        keys = {
            model: (dataset.name, withheld, model, tuple(args.settings), args.quantile)
            for model in args.models
        }
        if all(key in done for key in keys.values()):
            for model in args.models:
                records.append(done[keys[model]])
                print(row_line(done[keys[model]], list(SCORES)) + "  (recorded)", flush=True)
            continue
        clock = time.perf_counter()
        prepared = prepare_without(adata, dataset, withheld, args.work)
        query, mask = query_cells(adata, prepared, withheld)
        prepare_seconds = time.perf_counter() - clock
        for model in args.models:
            if keys[model] in done:
                records.append(done[keys[model]])
                print(row_line(done[keys[model]], list(SCORES)) + "  (recorded)", flush=True)
                continue
            clock = time.perf_counter()
            run = trained_run(prepared, model, train_options)
            train_seconds = time.perf_counter() - clock
            clock = time.perf_counter()
            result = evaluate(run, prepared, query, mask, args.quantile, args.scores)
            record = {
                "dataset": dataset.name,
                "withheld": withheld,
                "model": model,
                "settings": args.settings,
                "quantile": args.quantile,
                "n_withheld": int(mask.sum()),
                "n_known": int((~mask).sum()),
                "result": result,
                # this invocation's time (0 for a step found in the --work cache)
                "seconds": {
                    "prepare": round(prepare_seconds, 1),
                    "train": round(train_seconds, 1),
                    "evaluate": round(time.perf_counter() - clock, 1),
                },
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            prepare_seconds = 0.0
            records.append(record)
            seconds = record["seconds"]
            print(
                row_line(record, list(SCORES))
                + f"  ({seconds['prepare'] + seconds['train']:.0f}+{seconds['evaluate']:.0f} s)",
                flush=True,
            )
            append_record(args, record)
    for line in summary(records, args.quantile):
        print(line)
    mismatched = [r for r in records if not r["result"]["shipped_matches"]]
    print(
        f"shipped flags = predict's flags: {'yes' if not mismatched else f'NO for {len(mismatched)} runs'}; "
        f"wall time {time.perf_counter() - started:.0f} s"
    )
    return 1 if mismatched else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
