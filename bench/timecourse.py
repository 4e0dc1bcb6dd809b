# ruff: noqa: E402
"""Does the previous-time-point profile help? Base vs time-course variants, per class, with CIs.

What it does
------------
For two time courses, and for each of ``--seeds`` seeds (the seed sets both the stratified split and the
training), it prepares the same cells in several ways, trains the same tiny CPU transformer on each
(``cellformer.train``), predicts the test split and compares per-class F1 on the *same* test cells:

* ``base``  ``<CLS>`` + top ``K`` genes (``--max-genes K``), no previous profile
* ``half``  ``<CLS>`` + top ``K/2`` genes: the current block the time-course variants get (a control:
            any change of ``knn`` against ``base`` may come from fewer current genes, not the profile)
* ``knn``   ``<CLS>`` + top ``K/2`` + ``<SEP>`` + top ``K/2`` of the profile derived from the cell's
            nearest training cells at the preceding time point (``--time-key``)
* ``time``  ``base`` plus one context token for the time point (``--context-key TIME``): a control, since
            the derived profile also tells the model the time point (earliest cells have an empty block)
* ``true``  (synthetic only) the same with the simulated parent's real profile (``--previous-layer``):
            what a previous profile can add at best

Data: ``../shared/data/hsmm_timecourse.h5ad`` (HSMM myoblasts, FPKM, ``--input-normalized``, time
``Hours`` 0/24/48/72, label ``State``: Monocle states 1-3) and a synthetic branching course
(``cellformer.datasets.synthetic``, 6 time points, label ``cell_type``).

Test predictions of all seeds are pooled (each seed's test cells are the same for every variant, so the
comparison is paired). Printed: per-class F1 with 95% percentile-bootstrap CIs over the pooled cells,
macro-F1 and accuracy, and each variant minus ``base`` with paired-bootstrap 95% CIs. A difference whose
CI contains 0 is "no detectable difference" at this sample size.

Usage: ``python bench/timecourse.py [--seeds 3] [--epochs 30] [--max-genes 128] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
N_BOOT = 1000


def prepare_variant(source: Path, out: Path, variant: str, dataset: dict, seed: int, k: int):
    from cellformer.errors import RunDirError
    from cellformer.preparation.prepare import prepare
    from cellformer.preparation.prepared import PreparedData

    try:  # reuse a complete prepared directory of an earlier (interrupted) run of this script
        return PreparedData(out)
    except RunDirError:
        shutil.rmtree(out, ignore_errors=True)

    options = dict(dataset["prepare"], seed=seed, max_genes=k // 2 if variant == "half" else k)
    if variant == "knn":
        options["time_key"] = dataset["time_key"]
    elif variant == "time":
        options["context_keys"] = (dataset["time_key"],)
    elif variant == "true":
        options["previous_layer"] = "X_previous"
    return prepare(source, out=out, label_key=dataset["label_key"], **options)


def train_and_predict(prepared, out: Path, seed: int, epochs: int) -> np.ndarray:
    import cellformer

    if not (out / "model.safetensors").exists():  # reuse finished runs, redo unfinished ones
        shutil.rmtree(out, ignore_errors=True)
    run = (
        out
        if out.exists()
        else cellformer.train(
            prepared.path,
            out=out,
            seed=seed,
            max_epochs=epochs,
            patience=5,
            members=1,  # one transformer, as docs/timecourse.md measured (not the default ensemble)
            n_layers=2,
            d_model=64,
            n_heads=4,
            batch_size=32,
            lr=1e-3,
            max_length=int(prepared.meta["max_length"]),
            progress_bar=False,
        )
    )
    logits = cellformer.load(run).predict_split(prepared, "test").logits
    return logits.argmax(axis=1)


def f1_per_class(
    y_true: np.ndarray, y_pred: np.ndarray, n: int, index: np.ndarray | None = None
) -> np.ndarray:
    """Per-class F1, for the cells (or each row of resample indices) in ``index``; (..., n)."""
    if index is None:
        index = np.arange(len(y_true))[None, :]
    t, p = y_true[index], y_pred[index]  # (B, m)
    offsets = np.arange(index.shape[0])[:, None] * n
    tp = np.bincount((offsets + t)[t == p], minlength=index.shape[0] * n).reshape(-1, n)
    true_count = np.bincount((offsets + t).ravel(), minlength=index.shape[0] * n).reshape(-1, n)
    pred_count = np.bincount((offsets + p).ravel(), minlength=index.shape[0] * n).reshape(-1, n)
    denominator = true_count + pred_count
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), np.nan)


def _present_f1(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """Per-class F1 of the classes present in ``y_true`` (absent predicted classes give F1 0)."""
    f1 = np.nan_to_num(f1_per_class(y_true, y_pred, n)[0])
    return f1[np.bincount(y_true, minlength=n) > 0]


def summarize(y_true: np.ndarray, preds: dict[str, np.ndarray], names: list[str], n_classes: int) -> dict:
    n = len(names)
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(y_true), size=(N_BOOT, len(y_true)))
    present = np.bincount(y_true, minlength=n) > 0
    out: dict = {
        "n_cells": int(len(y_true)),
        "support": np.bincount(y_true, minlength=n).tolist(),
        "variants": {},
    }
    boot = {}
    for variant, y_pred in preds.items():
        f1 = f1_per_class(y_true, y_pred, n)[0]
        boot_f1 = f1_per_class(y_true, y_pred, n, index)
        macro = np.nanmean(np.where(present, f1, np.nan))
        boot_macro = np.nanmean(np.where(present[None, :], boot_f1, np.nan), axis=1)
        boot_acc = (y_true[index] == y_pred[index]).mean(axis=1)
        boot[variant] = (boot_f1, boot_macro, boot_acc)
        out["variants"][variant] = {
            "f1": f1.tolist(),
            "f1_ci": np.nanpercentile(boot_f1, [2.5, 97.5], axis=0).T.tolist(),
            "macro_f1": float(macro),
            "macro_f1_ci": np.percentile(boot_macro, [2.5, 97.5]).tolist(),
            "accuracy": float((y_true == y_pred).mean()),
            "accuracy_ci": np.percentile(boot_acc, [2.5, 97.5]).tolist(),
        }
    for variant in preds:
        if variant == "base":
            continue
        d_f1 = boot[variant][0] - boot["base"][0]
        d_macro = boot[variant][1] - boot["base"][1]
        d_acc = boot[variant][2] - boot["base"][2]
        v, b = out["variants"][variant], out["variants"]["base"]
        v["minus_base"] = {
            "f1": (np.array(v["f1"]) - np.array(b["f1"])).tolist(),
            "f1_ci": np.nanpercentile(d_f1, [2.5, 97.5], axis=0).T.tolist(),
            "macro_f1": v["macro_f1"] - b["macro_f1"],
            "macro_f1_ci": np.percentile(d_macro, [2.5, 97.5]).tolist(),
            "accuracy": v["accuracy"] - b["accuracy"],
            "accuracy_ci": np.percentile(d_acc, [2.5, 97.5]).tolist(),
        }
    out["classes"] = names
    return out


def print_table(title: str, result: dict) -> None:
    variants = list(result["variants"])
    fmt = lambda x, ci: f"{x:5.2f} [{ci[0]:5.2f},{ci[1]:5.2f}]"  # noqa: E731
    print(f"\n{title}: {result['n_cells']} test cells pooled over seeds")
    header = f"{'class':<12}{'n':>5}  " + "  ".join(f"{v:^19}" for v in variants)
    header += "  " + "  ".join(f"{v + '-base':^21}" for v in variants if v != "base")
    print(header)
    for c, name in enumerate(result["classes"]):
        if result["support"][c] == 0:
            continue
        cells = [fmt(result["variants"][v]["f1"][c], result["variants"][v]["f1_ci"][c]) for v in variants]
        diffs = [
            f"{result['variants'][v]['minus_base']['f1'][c]:+5.2f} "
            f"[{result['variants'][v]['minus_base']['f1_ci'][c][0]:+5.2f},"
            f"{result['variants'][v]['minus_base']['f1_ci'][c][1]:+5.2f}]"
            for v in variants
            if v != "base"
        ]
        print(f"{name:<12}{result['support'][c]:>5}  " + "  ".join(cells) + "  " + "  ".join(diffs))
    for key in ("macro_f1", "accuracy"):
        cells = [fmt(result["variants"][v][key], result["variants"][v][key + "_ci"]) for v in variants]
        diffs = [
            f"{result['variants'][v]['minus_base'][key]:+5.2f} "
            f"[{result['variants'][v]['minus_base'][key + '_ci'][0]:+5.2f},"
            f"{result['variants'][v]['minus_base'][key + '_ci'][1]:+5.2f}]"
            for v in variants
            if v != "base"
        ]
        print(f"{key:<12}{'':>5}  " + "  ".join(cells) + "  " + "  ".join(diffs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--max-genes", type=int, default=128)
    parser.add_argument("--datasets", default="hsmm,synthetic")
    parser.add_argument("--variants", help="comma-separated subset of the variants (base is always run)")
    parser.add_argument("--out", type=Path, help="keep prepared data, runs and results.json here")
    parser.add_argument(
        "--reports",
        type=Path,
        help="also write a `cellformer compare` report of the variants per dataset and seed here",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import lightning.pytorch  # noqa: F401  (its loggers exist from here on)

    for noisy in (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "lightning.pytorch.utilities.rank_zero",
    ):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    import cellformer
    from cellformer.datasets.synthetic import synthetic_timecourse

    t0 = time.perf_counter()
    work = args.out or Path(tempfile.mkdtemp(prefix="cellformer-timecourse-"))
    work.mkdir(parents=True, exist_ok=True)
    datasets = {
        "hsmm": {
            "path": SHARED / "hsmm_timecourse.h5ad",
            "label_key": "State",
            "time_key": "Hours",
            "prepare": {"input_normalized": True},
            "variants": ["base", "half", "time", "knn"],
        },
        "synthetic": {
            "path": work / "synthetic.h5ad",
            "label_key": "cell_type",
            "time_key": "time",
            "prepare": {"min_genes": 1, "max_mito_fraction": None},
            "variants": ["base", "half", "time", "knn", "true"],
        },
    }
    if "synthetic" in args.datasets and not datasets["synthetic"]["path"].exists():
        synthetic_timecourse(n_times=6, cells_per_time=200, n_genes=500, seed=0).write_h5ad(
            work / "synthetic.h5ad"
        )
    results = {}
    for name in args.datasets.split(","):
        dataset = datasets[name]
        if args.variants:
            keep = {"base", *args.variants.split(",")}
            dataset["variants"] = [v for v in dataset["variants"] if v in keep]
        y_true_all, preds_all = [], {v: [] for v in dataset["variants"]}
        names = None
        for seed in range(args.seeds):
            test_rows = None
            for variant in dataset["variants"]:
                tag = f"{name}-{variant}-s{seed}"
                prepared = prepare_variant(
                    dataset["path"], work / f"prep-{tag}", variant, dataset, seed, args.max_genes
                )
                rows = prepared.split_rows("test")
                if test_rows is None:
                    test_rows = rows
                    y_true_all.append(np.asarray(prepared.labels)[rows])
                    names = prepared.classes + prepared.unseen
                assert np.array_equal(rows, test_rows), "variants must share the test cells"
                preds_all[variant].append(train_and_predict(prepared, work / f"run-{tag}", seed, args.epochs))
                print(
                    f"[{time.perf_counter() - t0:6.0f} s] {tag}: test accuracy "
                    f"{np.mean(preds_all[variant][-1] == y_true_all[-1]):.3f}",
                    file=sys.stderr,
                    flush=True,
                )
            if args.reports:
                report = cellformer.compare(
                    [work / f"run-{name}-{variant}-s{seed}" for variant in dataset["variants"]],
                    out=args.reports / f"{name}-s{seed}",
                    overwrite=True,
                )
                print(f"report: {report}", file=sys.stderr, flush=True)
        y_true = np.concatenate(y_true_all)
        preds = {v: np.concatenate(p) for v, p in preds_all.items()}
        results[name] = summarize(y_true, preds, names, len(names))
        print_table(
            f"{name} (label {dataset['label_key']}, time {dataset['time_key']}, "
            f"K={args.max_genes}, {args.seeds} seeds, {args.epochs} max epochs)",
            results[name],
        )
        results[name]["per_seed"] = {
            v: [
                {
                    "accuracy": float(np.mean(p == t)),
                    "macro_f1": float(np.mean(_present_f1(t, p, len(names)))),
                }
                for t, p in zip(y_true_all, preds_all[v], strict=True)
            ]
            for v in preds_all
        }
        print(
            "per seed, accuracy/macro-F1: "
            + "; ".join(
                f"{v} " + " ".join(f"{r['accuracy']:.2f}/{r['macro_f1']:.2f}" for r in runs)
                for v, runs in results[name]["per_seed"].items()
            )
        )
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {work / 'results.json'}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
