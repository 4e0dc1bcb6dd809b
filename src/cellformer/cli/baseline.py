"""``cellformer baseline PREPARED_DIR --method logreg|knn|mlp --out RUN_DIR``."""

from __future__ import annotations

import argparse

from cellformer.kinds import BASELINES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "baseline",
        help="fit a simple baseline (logreg, kNN, MLP) on the same cells and splits",
        description=(
            "Fit a baseline on exactly the cells and splits of a prepared dataset, on log1p-normalized "
            "expression of the highly variable genes of the training split: multinomial logistic "
            "regression (the CellTypist approach), kNN on PCA, or a one-hidden-layer MLP. The run "
            "directory works with `cellformer evaluate`, `compare` and `predict` like a transformer run."
        ),
    )
    parser.add_argument(
        "prepared_dir", help="directory made by `cellformer prepare` (its input files must still exist)"
    )
    parser.add_argument("--method", required=True, choices=BASELINES, help="which baseline")
    parser.add_argument("--out", required=True, help="run directory to create")
    parser.add_argument("--seed", type=int, default=0, help="random seed (%(default)s)")
    parser.add_argument("--n-hvg", type=int, default=2000, help="highly variable genes used (%(default)s)")
    parser.add_argument(
        "--n-pcs", type=int, default=50, help="principal components for kNN / embeddings (%(default)s)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from cellformer.baselines.api import baseline

    # the library logs the summary (fit time, validation accuracy) and the run directory
    baseline(
        args.prepared_dir,
        method=args.method,
        out=args.out,
        seed=args.seed,
        overwrite=args.overwrite,
        n_hvg=args.n_hvg,
        n_pcs=args.n_pcs,
    )
    return 0
