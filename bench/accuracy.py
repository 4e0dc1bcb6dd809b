"""Is the transformer as accurate as logistic regression? Default settings, every labelled dataset, seeds.

For each labelled dataset in ``../shared/data`` this script

1. prepares the file once (``cellformer.prepare`` with its defaults: QC, the 70/15/15 split,
   the default tokenizer; ``--set prepare.KEY=VALUE`` changes one option, for ablations),
2. trains the transformer with ``cellformer.train``'s **defaults** once per seed (``--seeds``;
   ``--set KEY=VALUE`` changes a model / training option, for ablations),
3. fits the ``logreg`` and ``knn`` baselines on exactly the same cells, and
4. evaluates every run on one split (``cellformer.evaluate``) and prints one table: dataset, cells,
   classes, transformer macro-F1 (mean ± sd over seeds) and accuracy, logreg and kNN macro-F1, the gap
   to logreg (transformer − logreg), and the transformer's training wall time (mean over seeds).
   The last line is the worst gap over the datasets.

The final benchmark reads the **test** split (the default). Experiments that choose defaults must use
validation cells (the test cells are read once, by the final run): ``--split val`` scores the run on the
validation cells that also chose its checkpoint (early stopping, best epoch), which flatters a run whose
validation curve is noisy (the best of 30 noisy epochs is an optimistic estimate); ``--split heldout``
(round 6 on) scores every validation cell with a model that did not see it: the validation cells are split
in two halves (stratified, seeded), one run selects on half A and is scored on half B, a second run the
other way round, and the two halves' predictions are pooled into one macro-F1 over all validation cells.
A configuration that selects nothing (``keep=last``, ``patience=0``) trains once and is scored on all
validation cells, which is the same thing.

Usage::

    python bench/accuracy.py                      # full: 5 datasets x 3 seeds (about 1 h on 2 cores)
    python bench/accuracy.py --quick              # 1 seed, bladder + pbmc68k (< 15 min on 2 cores)
    python bench/accuracy.py --split heldout --seeds 0 1 --datasets bladder pbmc68k pancreas --set keep=last
    python bench/accuracy.py --split val --seeds 0 --set prepare.tokenizer=binned --set lr=3e-3 \\
        --record docs/helpers/accuracy_runs.jsonl --label "binned, lr 3e-3"

Prepared datasets and baseline runs are cached in ``--work`` (keyed by their options), so ablations
that change only training options reuse them. ``--record FILE`` appends one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from labelled_data import DATA, DATASETS, Dataset, parse_value, prepared_digest, run_digest

QUICK = ("bladder", "pbmc68k")


def parse_settings(items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``prepare.KEY=VALUE`` and ``KEY=VALUE`` (model / train) settings, as two dicts."""
    prepare_options: dict[str, Any] = {}
    train_options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --set needs KEY=VALUE, got {item!r}")
        if key.startswith("prepare."):
            prepare_options[key.removeprefix("prepare.")] = parse_value(value)
        else:
            train_options[key] = parse_value(value)
    return prepare_options, train_options


def prepared_dir(dataset: Dataset, options: dict[str, Any], work: Path) -> Path:
    """Prepare ``dataset`` once per set of options (cached in ``work``)."""
    import cellformer

    merged = {**dataset.options, **options}
    out = work / dataset.name / f"prepared-{prepared_digest(merged)}"
    if not (out / "meta.json").exists():
        if "unlabelled" in merged:  # prepare.unlabelled=FILE[,FILE]: files in the data folder
            merged["unlabelled"] = [DATA / name for name in str(merged["unlabelled"]).split(",")]
        cellformer.prepare(DATA / dataset.file, out=out, overwrite=True, **merged)
    return out


def halves(prepared: Path) -> tuple[Path, Path]:
    """Two copies of ``prepared`` whose validation cells are split in halves: copy ``a`` validates on
    half A and holds half B as its test split, copy ``b`` the other way round (files hard-linked, the
    splits and the manifest written anew). Halves are stratified by label, seeded."""
    import shutil

    import numpy as np

    from cellformer.integrity import write_manifest

    with np.load(prepared / "splits.npz") as npz:
        splits = {key: npz[key] for key in npz.files}
    labels = np.load(prepared / "labels.npy")
    rng = np.random.default_rng(0)
    half_a, half_b = [], []
    for label in np.unique(labels[splits["val"]]):
        rows = rng.permutation(splits["val"][labels[splits["val"]] == label])
        half_a.append(rows[0::2])
        half_b.append(rows[1::2])
    a, b = np.sort(np.concatenate(half_a)), np.sort(np.concatenate(half_b))
    out = []
    for name, (val, test) in (("a", (a, b)), ("b", (b, a))):
        copy = prepared.parent / f"{prepared.name}-heldout-{name}"
        if not (copy / "manifest.json").exists():
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(
                prepared,
                copy,
                copy_function=os.link,
                ignore=shutil.ignore_patterns("baseline-*", "transformer-*", "manifest.json"),
            )
            (copy / "splits.npz").unlink()  # hard-linked: never write through to the original
            halved = {**splits, "val": val, "test": test}  # any other split (unlabelled) as it was
            np.savez(copy / "splits.npz", **halved)
            meta = json.loads((copy / "meta.json").read_text())
            meta["splits"]["sizes"] = {key: len(rows) for key, rows in halved.items()}
            meta["splits"]["strategy"] = (
                f"bench/accuracy.py --split heldout: {prepared.name}'s val, half {name}"
            )
            (copy / "meta.json").unlink()
            (copy / "meta.json").write_text(json.dumps(meta, indent=2))
            write_manifest(copy, "prepared")
        out.append(copy)
    return out[0], out[1]


def selects_checkpoint(options: dict[str, Any]) -> bool:
    """Whether validation cells choose anything in training with these options (early stopping or the
    kept epoch)."""
    from cellformer.config import TrainConfig

    train = TrainConfig(**{k: v for k, v in options.items() if k in TrainConfig.field_names()})
    return train.keep == "best" or train.patience > 0


def heldout_scores(prepared: Path, options: dict[str, Any], seed: int) -> dict[str, Any]:
    """Macro-F1 on every validation cell, each predicted by a run that did not select on it."""
    import numpy as np

    from cellformer.evaluation.metrics import macro_f1

    if not selects_checkpoint(options):
        return transformer_scores(prepared, options, seed, "val")
    copies = halves(prepared)
    runs = [transformer_scores(copy, options, seed, "test") for copy in copies]
    y_true, y_pred = [], []
    for copy in copies:
        with np.load(
            copy / f"transformer-{run_digest(options)}-seed{seed}" / "predictions" / "test.npz"
        ) as npz:
            y_true.append(npz["y_true"])
            y_pred.append(npz["logits"].argmax(axis=1))
    truth, predicted = np.concatenate(y_true), np.concatenate(y_pred)
    return {
        "macro_f1": macro_f1(truth, predicted),
        "accuracy": float((truth == predicted).mean()),
        "train_seconds": sum(r["train_seconds"] for r in runs) / 2,
        "epochs": sum(r["epochs"] for r in runs) / 2,
        "halves": [{k: r[k] for k in ("macro_f1", "epochs")} for r in runs],
    }


def evaluate_run(run: Path, split: str) -> dict[str, Any]:
    import cellformer

    metrics = cellformer.evaluate(run, split=split)
    return {"macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"]}


def baseline_scores(prepared: Path, method: str, split: str) -> dict[str, Any]:
    import cellformer

    run = prepared / f"baseline-{method}"
    if not (run / "config.json").exists():
        cellformer.baseline(prepared, method=method, out=run, overwrite=True)
    return evaluate_run(run, split)


def transformer_scores(prepared: Path, options: dict[str, Any], seed: int, split: str) -> dict[str, Any]:
    import cellformer

    run = prepared / f"transformer-{run_digest(options)}-seed{seed}"
    started = time.perf_counter()
    if not (run / "model.safetensors").exists():
        if run.exists():
            import shutil

            shutil.rmtree(run)
        cellformer.train(prepared, out=run, seed=seed, progress_bar=False, **options)
        seconds = time.perf_counter() - started
        (run / "bench_seconds.txt").write_text(f"{seconds:.1f}\n")
    seconds = float((run / "bench_seconds.txt").read_text())
    epochs = sum(1 for _ in open(run / "log.csv")) - 1
    return {**evaluate_run(run, split), "train_seconds": seconds, "epochs": epochs}


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"one seed, {' + '.join(QUICK)} (< 15 min)")
    parser.add_argument("--datasets", nargs="+", choices=[d.name for d in DATASETS])
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds (default 0 1 2)")
    parser.add_argument(
        "--split",
        choices=("test", "val", "heldout"),
        default="test",
        help="test: the final benchmark; val: validation cells (also used to select); heldout: validation "
        "cells, each scored by a run that selected on the other half (see above)",
    )
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cellformer-bench-accuracy"))
    parser.add_argument("--record", type=Path, help="append one JSON line per dataset to this file")
    parser.add_argument("--label", default="defaults", help="name of this configuration in --record")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    warnings.filterwarnings("ignore")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.datasets or (list(QUICK) if args.quick else [d.name for d in DATASETS])
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    prepare_options, train_options = parse_settings(args.settings)
    mode = "quick" if args.quick else "full"
    print(
        f"bench/accuracy.py ({mode}): {len(names)} datasets x {len(seeds)} seeds on the {args.split} split; "
        f"transformer = cellformer defaults{' + ' + ', '.join(args.settings) if args.settings else ''}; "
        f"started {time.strftime('%H:%M:%S')}"
        + ("" if args.quick else " (the full run takes about 1 h on a 2-core machine)"),
        flush=True,
    )
    header = (
        f"{'dataset':<10} {'cells':>6} {'classes':>7}  {'transformer macro-F1':>22} {'accuracy':>8}  "
        f"{'logreg':>6} {'kNN':>6}  {'gap':>7}  {'train s':>7}"
    )
    lines, gaps = [header], []
    for dataset in DATASETS:
        if dataset.name not in names:
            continue
        prepared = prepared_dir(dataset, prepare_options, args.work)
        meta = json.loads((prepared / "meta.json").read_text())
        meta["n_cells"] -= meta["splits"]["sizes"].get("unlabelled", 0)  # labelled cells only
        n_classes = len(json.loads((prepared / "classes.json").read_text())["classes"])
        split = "val" if args.split == "heldout" else args.split  # the baselines select nothing on val
        logreg = baseline_scores(prepared, "logreg", split)
        knn = baseline_scores(prepared, "knn", split)
        if args.split == "heldout":
            runs = [heldout_scores(prepared, train_options, seed) for seed in seeds]
        else:
            runs = [transformer_scores(prepared, train_options, seed, args.split) for seed in seeds]
        f1 = [r["macro_f1"] for r in runs]
        gap = statistics.mean(f1) - logreg["macro_f1"]
        gaps.append((gap, dataset.name))
        seconds = statistics.mean(r["train_seconds"] for r in runs)
        lines.append(
            f"{dataset.name:<10} {meta['n_cells']:>6} {n_classes:>7}  {fmt(f1):>22} "
            f"{statistics.mean(r['accuracy'] for r in runs):>8.3f}  {logreg['macro_f1']:>6.3f} "
            f"{knn['macro_f1']:>6.3f}  {gap:>+7.3f}  {seconds:>7.0f}"
        )
        print(lines[-1] if len(lines) > 2 else "\n".join(lines), flush=True)
        if args.record:
            record = {
                "label": args.label,
                "settings": args.settings,
                "split": args.split,
                "dataset": dataset.name,
                "cells": meta["n_cells"],
                "classes": n_classes,
                "seeds": seeds,
                "transformer": runs,
                "logreg": logreg,
                "knn": knn,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            with open(args.record, "a") as handle:
                handle.write(json.dumps(record) + "\n")
    worst, where = min(gaps)
    print(f"worst gap to logreg (transformer - logreg macro-F1, {args.split}): {worst:+.3f} ({where})")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
