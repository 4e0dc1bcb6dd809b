"""``cellformer evaluate RUN_DIR [--split test]``: metrics, calibration and plots for one run."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="metrics, calibration and plots of a trained run on a split",
        description=(
            "Evaluate a run directory (transformer or baseline) on a split of the dataset it was prepared "
            "from. Writes predictions/{split}.npz, metrics/{split}.json (accuracy, macro/weighted F1, "
            "balanced accuracy, per-class scores, confusion matrix, top-2 accuracy, bootstrap 95%% CIs, "
            "temperature-scaling calibration with ECE before/after) and plots/ into the run directory."
        ),
    )
    parser.add_argument("run_dir", help="run directory made by `cellformer train` or `cellformer baseline`")
    parser.add_argument(
        "--split", default="test", choices=("test", "val", "train"), help="split (%(default)s)"
    )
    parser.add_argument("--prepared", help="prepared dataset directory, if it moved since training")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from cellformer.evaluation.api import evaluate

    m = evaluate(args.run_dir, split=args.split, prepared=args.prepared)
    cal = m["calibration"]
    lo, hi = m["ci"]["macro_f1"]
    print(f"{m['run']['name']} on {m['n_cells']} {m['split']} cells:")
    print(f"  accuracy {m['accuracy']:.3f}   macro-F1 {m['macro_f1']:.3f} (95% CI {lo:.3f}-{hi:.3f})")
    print(f"  balanced accuracy {m['balanced_accuracy']:.3f}   top-2 accuracy {m['top2_accuracy']:.3f}")
    print(
        f"  ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f} after temperature scaling (T={cal['temperature']:.2f})"
    )
    if m["n_unseen_cells"]:
        print(f"  {m['n_unseen_cells']} cell(s) with labels unseen in training count as errors")
    print(f"metrics: {args.run_dir}/metrics/{m['split']}.json   plots: {args.run_dir}/plots/")
    return 0
