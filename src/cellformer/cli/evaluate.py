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
            "balanced accuracy, per-class scores, confusion matrix, top-2 accuracy, bootstrap 95% CIs, "
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
    import logging

    from cellformer.cli import drop_log_lines
    from cellformer.evaluation.api import evaluate
    from cellformer.text import plural

    drop_log_lines("cellformer.evaluation.api", "%s on %s: accuracy")  # the block below says it all
    m = evaluate(args.run_dir, split=args.split, prepared=args.prepared)
    cal = m["calibration"]
    lo, hi = m["ci"]["macro_f1"]
    lines = [
        f"{m['run']['name']} on {plural(m['n_cells'], m['split'] + ' cell')}:",
        f"  accuracy {m['accuracy']:.3f}   macro-F1 {m['macro_f1']:.3f} (95% CI {lo:.3f}-{hi:.3f})",
        f"  balanced accuracy {m['balanced_accuracy']:.3f}   top-2 accuracy {m['top2_accuracy']:.3f}",
        f"  ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f} after temperature scaling "
        f"(T={cal['temperature']:.2f})",
    ]
    if m["n_unseen_cells"]:
        lines.append(
            f"  {plural(m['n_unseen_cells'], 'cell')} with labels unseen in training count as errors"
        )
    lines.append(f"metrics: {args.run_dir}/metrics/{m['split']}.json   plots: {args.run_dir}/plots/")
    logging.getLogger(__name__).info("\n".join(lines))
    return 0
