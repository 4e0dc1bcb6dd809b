"""``cellformer.compare``: one report that says which model to trust, how much, and on which cell types.

:func:`compare` is thin: it makes sure every run is evaluated on the split, loads the results and hands
them to :func:`build_report`, which checks that the runs saw exactly the same cells, runs the paired
tests (:func:`analyse`) and writes the report directory::

    REPORT_DIR/report.html   one self-contained file (images embedded), opens offline
    REPORT_DIR/report.md     the same content, images beside it
    REPORT_DIR/report.json   the numbers behind both
    REPORT_DIR/*.png
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from cellformer.atomic import atomic_directory, read_json, write_json
from cellformer.errors import InputError, RunDirError
from cellformer.evaluation.result import (  # noqa: F401 (SMALL_CLASS: part of the report)
    SMALL_CLASS,
    RunResult,
    calibrated_proba,
    ece,
    ece_used,
    scaling_hurt,
    slug,
)
from cellformer.evaluation.stats import paired_comparison
from cellformer.provenance import cellformer_version, now_iso
from cellformer.runs import read_run_config

log = logging.getLogger(__name__)

ALPHA = 0.05
WEAK_F1 = 0.5


def compare(
    run_dirs: list[str | Path], *, out: str | Path, split: str = "test", overwrite: bool = False
) -> Path:
    """Compare trained runs on the same cells and write an HTML and a Markdown report.

    Runs not yet evaluated on ``split`` (or retrained since) are evaluated first.

    Parameters
    ----------
    run_dirs
        Run directories (transformers and baselines) prepared from the same dataset and splits.
    out
        Report directory to create; refused if it exists unless ``overwrite``.
    split
        The split to compare on (``"test"`` by default).
    overwrite
        Replace an existing report directory (only once the new report is complete).

    Returns
    -------
    The path of ``report.html``.
    """
    out = Path(out)
    check_output(out, overwrite)
    if not run_dirs:
        raise InputError("compare needs at least one run directory")
    results = []
    names = unique_names([Path(r) for r in run_dirs])
    for run_dir, name in zip(run_dirs, names, strict=True):
        run_dir = Path(run_dir)
        read_run_config(run_dir)
        from cellformer.runs import verify_run

        verify_run(run_dir)  # its files as written (cellformer.integrity)
        if needs_evaluation(run_dir, split):
            from cellformer.evaluation.api import evaluate

            log.info("evaluating %s on the %s split", run_dir, split)
            evaluate(run_dir, split=split)
        results.append(load_result(run_dir, split, name=name))
    return build_report(results, out, overwrite=overwrite)


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing output path unless ``overwrite`` (before any work is done)."""
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; choose another --out or pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory; choose another --out")


def unique_names(run_dirs: list[Path]) -> list[str]:
    """Short display names: the directory name, with its parent when two runs share a name."""
    base = [p.resolve().name for p in run_dirs]
    names = [
        f"{p.resolve().parent.name}/{name}" if base.count(name) > 1 else name
        for p, name in zip(run_dirs, base, strict=True)
    ]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name} ({seen[name]})"
    return names


def needs_evaluation(run_dir: Path, split: str) -> bool:
    """True when the run has no complete evaluation of ``split`` or its model is newer than it."""
    from cellformer.evaluation.api import METRICS_FORMAT_VERSION

    metrics_path = run_dir / "metrics" / f"{split}.json"
    if not metrics_path.exists() or not (run_dir / "predictions" / f"{split}.npz").exists():
        return True
    metrics = read_json(metrics_path)
    if metrics.get("format_version") != METRICS_FORMAT_VERSION:
        return True
    if any(not (run_dir / p).exists() for p in metrics.get("plots", {}).values()):
        return True
    if _evaluated_on_other_files(run_dir, metrics):
        return True
    model = run_dir / "model.safetensors"
    return model.exists() and model.stat().st_mtime > metrics_path.stat().st_mtime


def _evaluated_on_other_files(run_dir: Path, metrics: dict[str, Any]) -> bool:
    """The metrics predate the run's current files or were computed on other prepared data."""
    from cellformer.integrity import digest, read_manifest

    recorded = metrics.get("integrity", {}).get("run_manifest")
    manifest = read_manifest(run_dir)
    if manifest is not None and recorded != digest(manifest):
        return True
    trained_on = read_run_config(run_dir).get("data_fingerprint")
    evaluated_on = metrics.get("data", {}).get("prepared_fingerprint")
    return bool(trained_on) and evaluated_on != trained_on


def load_result(run_dir: str | Path, split: str, *, name: str | None = None) -> RunResult:
    """Read an evaluated run (``metrics/{split}.json`` and ``predictions/{split}.npz``)."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics" / f"{split}.json"
    if not metrics_path.exists():
        raise RunDirError(
            f"{run_dir} has not been evaluated on the {split!r} split; run `cellformer evaluate {run_dir} --split {split}`"
        )
    metrics = read_json(metrics_path)
    predictions = run_dir / "predictions" / f"{split}.npz"
    with np.load(predictions) as npz:
        y_true, logits = npz["y_true"], npz["logits"]
    recorded = metrics.get("integrity", {}).get("predictions_sha256")
    if recorded:
        from cellformer.integrity import predictions_digest

        if predictions_digest(y_true, logits) != recorded:
            raise RunDirError(
                f"{predictions} changed since `cellformer evaluate` wrote {metrics_path}: its labels or "
                f"predictions differ; evaluate the run again: `cellformer evaluate {run_dir} --split {split}`"
            )
    labelled = y_true >= 0
    return RunResult(
        name=name or run_dir.name,
        run_dir=run_dir,
        kind=metrics["run"]["kind"],
        metrics=metrics,
        y_true=y_true[labelled],
        logits=logits[labelled],
        plots={key: run_dir / rel for key, rel in metrics.get("plots", {}).items()},
    )


def check_comparable(results: list[RunResult]) -> None:
    """Refuse runs evaluated on different data, splits or classes, naming the odd one out."""
    first = results[0]
    for other in results[1:]:
        a, b = first.metrics, other.metrics
        if a["split"] != b["split"]:
            raise InputError(
                f"runs {first.name} and {other.name} were evaluated on different splits ({a['split']} vs {b['split']})"
            )
        if a["data"]["classes"] != b["data"]["classes"]:
            raise InputError(
                f"runs {first.name} and {other.name} predict different classes; compare runs trained on the same prepared dataset"
            )
        cells_a, cells_b = a["data"].get("cells_sha256"), b["data"].get("cells_sha256")
        if cells_a and cells_b and cells_a != cells_b:
            raise InputError(
                f"runs {first.name} ({a['data']['prepared']}) and {other.name} ({b['data']['prepared']}) were "
                f"evaluated on different {a['split']} cells (by content, cellformer.data.leakage); compare only "
                "runs trained on the same prepared dataset"
            )
        if a["data"]["fingerprint"] != b["data"]["fingerprint"] or not np.array_equal(
            first.y_true, other.y_true
        ):
            raise InputError(
                f"runs {first.name} ({a['data']['prepared']}) and {other.name} ({b['data']['prepared']}) were "
                f"prepared on different data or splits, so their {a['split']} cells differ; compare only runs "
                "trained on the same prepared dataset"
            )


def _fmt_ci(ci: list[float]) -> str:
    return f"{ci[0]:.3f}–{ci[1]:.3f}"


def analyse(results: list[RunResult]) -> dict[str, Any]:
    """Paired tests, per-class comparison and the plain-language verdict, JSON-ready."""
    first = results[0]
    n_labels = _n_labels(first)
    y_true = first.y_true
    best = max(results, key=lambda r: r.metrics["macro_f1"])
    baselines = [r for r in results if r.is_baseline]
    reference = max(baselines, key=lambda r: r.metrics["macro_f1"]) if baselines else None
    vs_reference = {
        r.name: paired_comparison(y_true, r.y_pred, reference.y_pred, n_labels)
        for r in results
        if reference is not None and r is not reference
    }
    vs_best = {
        r.name: paired_comparison(y_true, r.y_pred, best.y_pred, n_labels) for r in results if r is not best
    }
    return {
        "split": first.metrics["split"],
        "n_cells": int(y_true.size),
        "best": best.name,
        "reference_baseline": None if reference is None else reference.name,
        "vs_reference_baseline": vs_reference,
        "vs_best": vs_best,
        "verdict": verdict(results, best, reference, vs_reference, vs_best),
    }


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def _named(r: RunResult, noun: str) -> str:
    """``"the transformer tf"``, or just the run's name when it already says ``noun`` ("transformer")."""
    words = {w.lower() for w in re.split(r"[^A-Za-z0-9]+", r.name)}
    return r.name if noun.split()[-1].lower() in words else f"the {noun} {r.name}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text.startswith("the ") else text


def _n_labels(r: RunResult) -> int:
    return len(r.metrics["data"]["classes"]) + len(r.metrics["data"]["unseen"])


def _cost(r: RunResult) -> tuple[float, float]:
    model = r.metrics.get("model", {})
    return (model.get("n_parameters") or 0, model.get("train_seconds") or 0.0)


def _significant(test: dict[str, Any]) -> bool:
    ci = test["macro_f1"]["ci"]
    return ci[0] > 0 or ci[1] < 0


def verdict(
    results: list[RunResult],
    best: RunResult,
    reference: RunResult | None,
    vs_reference: dict[str, dict[str, Any]],
    vs_best: dict[str, dict[str, Any]],
) -> list[str]:
    """Plain-language conclusions, most important first (Markdown-light: ``**bold**`` only)."""
    lines: list[str] = []
    n = best.y_true.size
    split = best.metrics["split"]
    transformers = [r for r in results if not r.is_baseline]

    # 1. Transformer vs the best baseline, stated plainly.
    if reference is None:
        lines.append(
            "No baseline run was given, so this report cannot say whether a simple model would do as well; "
            "add `cellformer baseline ... --method logreg` and `--method knn` runs."
        )
    for t in transformers:
        if reference is None:
            continue
        test = vs_reference[t.name]["macro_f1"]
        d, (lo, hi) = test["difference"], test["ci"]
        numbers = (
            f"macro-F1 {t.metrics['macro_f1']:.3f} vs {reference.metrics['macro_f1']:.3f} "
            f"(difference {d:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}, {n} {split} cells)"
        )
        t_named, b_named = _named(t, "transformer"), _named(reference, "baseline")
        if lo > 0:
            lines.append(
                f"**{_cap(t_named)} is better than the best baseline, {reference.name}**: {numbers}."
            )
        elif hi < 0:
            lines.append(f"**{_cap(b_named)} is better than {t_named}**: {numbers}.")
        else:
            t_params, t_time = _cost(t)
            b_params, b_time = _cost(reference)
            costs = []
            if t_params and b_params and t_params > b_params:
                costs.append(f"{t_params / b_params:.3g}× the parameters")
            if t_time and b_time and t_time > b_time:
                costs.append(f"{t_time / b_time:.3g}× the training time")
            extra = f" The transformer needs {' and '.join(costs)} for no measurable gain." if costs else ""
            lines.append(
                f"**{_cap(b_named)} is as good as {t_named}**: {numbers}; "
                f"the difference is within the noise of this test set.{extra}"
            )
    best_transformer = max(transformers, key=lambda r: r.metrics["macro_f1"]) if transformers else None
    for t in transformers:
        if t is best_transformer:
            continue
        test = paired_comparison(t.y_true, t.y_pred, best_transformer.y_pred, _n_labels(t))["macro_f1"]
        lo, hi = test["ci"]
        word = "worse than" if hi < 0 else ("better than" if lo > 0 else "as good as")
        lines.append(
            f"Between transformers: {t.name} is {word} {best_transformer.name} (macro-F1 difference "
            f"{test['difference']:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f})."
        )

    # 2. Which model to trust: the cheapest run that is not significantly worse than the best.
    tied = [best] + [r for r in results if r is not best and not _significant(vs_best[r.name])]
    pick = min(tied, key=lambda r: (not r.is_baseline, _cost(r)[0], _cost(r)[1])) if len(tied) > 1 else best
    if pick is best:
        lines.append(
            f"Best model: **{best.name}** (macro-F1 {best.metrics['macro_f1']:.3f}, 95% CI "
            f"{_fmt_ci(best.metrics['ci']['macro_f1'])}; accuracy {best.metrics['accuracy']:.3f})"
            + ("." if len(tied) == 1 else f"; statistically tied with {', '.join(r.name for r in tied[1:])}.")
        )
    else:
        others = ", ".join(r.name for r in tied if r is not pick)
        lines.append(
            f"Recommended: **{pick.name}** (macro-F1 {pick.metrics['macro_f1']:.3f}, 95% CI "
            f"{_fmt_ci(pick.metrics['ci']['macro_f1'])}): it is statistically tied with {others} "
            f"(the highest score is {best.name}'s {best.metrics['macro_f1']:.3f}) and is the simplest of them."
        )

    # 3. On which cell types: where the recommended model is weak, and where runs disagree most.
    #    A class with fewer than SMALL_CLASS test cells is never called reliable or unreliable.
    per_class = [c for c in pick.metrics["per_class"] if c["seen_in_training"] and c["support"] > 0]
    large = [c for c in per_class if c["support"] >= SMALL_CLASS]
    small = [c for c in per_class if c["support"] < SMALL_CLASS]
    weak = sorted((c for c in large if c["f1"] < WEAK_F1), key=lambda c: c["f1"])
    if weak:
        lines.append(
            f"{pick.name} is unreliable on: "
            + ", ".join(f"{c['label']} (F1 {c['f1']:.2f}, {_cells(c['support'])})" for c in weak[:8])
            + ("; …" if len(weak) > 8 else "")
            + "."
        )
    elif large:
        among = f"with at least {SMALL_CLASS} {split} cells" if small else f"in the {split} split"
        lines.append(f"{pick.name} reaches F1 ≥ {WEAK_F1} on every cell type {among}.")
    if small:
        low = sorted((c for c in small if c["f1"] < WEAK_F1), key=lambda c: c["f1"])
        text = (
            f"{len(small)} cell type(s) have fewer than {SMALL_CLASS} {split} cells "
            f"({', '.join(c['label'] for c in small[:8])}{', …' if len(small) > 8 else ''}): their per-class "
            "scores are too uncertain to rank models on, or to call a model reliable or unreliable on them."
        )
        if low:
            text += (
                f" {pick.name} scores F1 < {WEAK_F1} on "
                + ", ".join(f"{c['label']} ({c['f1']:.2f}, {_cells(c['support'])})" for c in low[:8])
                + ("; …" if len(low) > 8 else "")
                + ", too few cells to judge."
            )
        lines.append(text)
    if reference is not None:
        for t in transformers:
            gaps, small_gaps = _class_gaps(t, reference), _class_gaps(t, reference, small=True)
            if not gaps and not small_gaps:
                continue
            text = f"Largest per-class F1 differences, {t.name} minus {reference.name}"
            if gaps:
                text += f", cell types with at least {SMALL_CLASS} {split} cells: " + _gap_list(gaps)
            else:
                text += f": none over 0.02 among cell types with at least {SMALL_CLASS} {split} cells"
            if small_gaps:
                text += "; among smaller cell types (too few cells to rank on): " + _gap_list(small_gaps)
            lines.append(text + ".")

    # 4. How much to trust the probabilities (ECE of the probabilities each run hands out).
    lines.append(_confidence_line(results, pick))

    # 5. Labels the models could never get right.
    unseen = first_unseen(results[0])
    if unseen:
        total = sum(u["n_cells"] for u in unseen)
        lines.append(
            f"{_cells(total)} of the {split} split carry labels never seen in training "
            f"({', '.join(u['label'] for u in unseen)}); every model necessarily mislabels them, and they "
            "count as errors above."
        )
    return lines


def first_unseen(result: RunResult) -> list[dict[str, Any]]:
    return list(result.metrics.get("unseen", []))


def _confidence_line(results: list[RunResult], pick: RunResult) -> str:
    """How well calibrated the recommended run's probabilities are, and which run is best calibrated."""
    cal = pick.metrics["calibration"]
    if not cal.get("fitted_on"):
        return (
            f"Confidence: {pick.name}'s probabilities could not be calibrated (no validation split); "
            f"expected calibration error (ECE, a fraction: 0 is perfect) {ece(cal['ece_before'])}."
        )
    text = (
        f"Confidence: {pick.name}'s expected calibration error (ECE, the average gap between stated "
        f"confidence and accuracy, as a fraction: 0 is perfect) is {ece(cal['ece_after'])} after temperature "
        f"scaling (T={cal['temperature']:.2f}, fitted on the validation split), {ece(cal['ece_before'])} before."
    )
    if scaling_hurt(pick):
        text += (
            f" Temperature scaling made {pick.name}'s calibration worse on these cells: the temperature "
            "fitted on the validation split does not carry over, and predictions use it."
        )
    calibrated = min(results, key=ece_used)
    if calibrated is not pick:
        text += (
            f" The best calibrated run is {calibrated.name} (ECE {ece(ece_used(calibrated))} with the "
            "temperature its predictions use"
            + (
                f"; {ece(calibrated.metrics['calibration']['ece_before'])} before scaling, which made it worse)."
                if scaling_hurt(calibrated)
                else ")."
            )
        )
    hurt = [r.name for r in results if r is not pick and r is not calibrated and scaling_hurt(r)]
    if hurt:
        text += f" Temperature scaling also made {', '.join(hurt)} worse calibrated (see the table)."
    return text


def _gap_list(gaps: list[tuple[str, float, int]]) -> str:
    return ", ".join(f"{label} {gap:+.2f} ({_cells(support)})" for label, gap, support in gaps)


def _class_gaps(
    a: RunResult, b: RunResult, top: int = 3, *, small: bool = False
) -> list[tuple[str, float, int]]:
    """The classes with the largest absolute F1 difference (a - b), at least 0.02.

    Among classes with at least ``SMALL_CLASS`` test cells, or (``small``) among the smaller ones.
    """
    rows = []
    for ca, cb in zip(a.metrics["per_class"], b.metrics["per_class"], strict=True):
        if ca["seen_in_training"] and ca["support"] > 0 and (ca["support"] < SMALL_CLASS) == small:
            rows.append((ca["label"], ca["f1"] - cb["f1"], ca["support"]))
    rows = [r for r in rows if abs(r[1]) >= 0.02]
    return sorted(rows, key=lambda r: -abs(r[1]))[:top]


def build_report(results: list[RunResult], out: str | Path, *, overwrite: bool = False) -> Path:
    """Write the report directory for evaluated runs; returns the path of ``report.html``."""
    from cellformer.evaluation.render import write_report

    out = Path(out)
    check_output(out, overwrite)
    if not results:
        raise InputError("compare needs at least one evaluated run")
    check_comparable(results)
    analysis = analyse(results)
    analysis["created"] = now_iso()
    analysis["cellformer_version"] = cellformer_version()
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_report(tmp, results, analysis)
        write_json(
            tmp / "report.json",
            {
                **analysis,
                "runs": [
                    {
                        "name": r.name,
                        "run_dir": str(r.run_dir.resolve()),
                        "kind": r.kind,
                        **{
                            k: r.metrics[k]
                            for k in (
                                "accuracy",
                                "macro_f1",
                                "weighted_f1",
                                "balanced_accuracy",
                                "top2_accuracy",
                                "ci",
                                "calibration",
                                "model",
                            )
                        },
                    }
                    for r in results
                ],
                "data": results[0].metrics["data"],
            },
        )
    log.info("report written to %s", out / "report.html")
    return out / "report.html"
