"""``cellformer demo [--out DIR]``: prepare → train → baselines → evaluate → compare on bundled PBMC data."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="the whole workflow on scanpy's bundled PBMC data (offline, a few minutes on a CPU)",
        description=(
            "Run prepare, train (a small transformer), two baselines (logistic regression, kNN), evaluate "
            "and compare on scanpy's bundled pbmc68k_reduced data (700 cells, 10 types; no download). "
            "Ends by printing the path of the comparison report."
        ),
    )
    parser.add_argument(
        "--out", default="cellformer_demo", help="directory for everything it writes (%(default)s)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the demo's folders in an existing --out"
    )
    parser.add_argument(
        "--max-epochs", type=int, help="most transformer epochs (default: train's, with early stopping)"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from cellformer.cli import quiet_lightning
    from cellformer.demo_workflow import demo

    quiet_lightning()
    report = demo(args.out, overwrite=args.overwrite, max_epochs=args.max_epochs)
    print(f"report: {report}")
    return 0
