"""``cellformer merge-annotations PIECE.h5ad ... --out OUTPUT.h5ad``: join ``predict --shard`` pieces."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "merge-annotations",
        help="join the pieces written by `cellformer predict --shard K/N` into one annotation file",
        description=(
            "Join the annotation files of `cellformer predict --shard K/N` pieces (any order) into OUTPUT.h5ad "
            "and OUTPUT.csv, as one `predict --annotations-only` of the whole file would write them. The pieces "
            "must come from one run and one input file and cover it exactly (each K of 1..N once)."
        ),
    )
    parser.add_argument("pieces", nargs="+", metavar="PIECE.h5ad", help="annotation files of the pieces")
    parser.add_argument("--out", required=True, help="annotation file to write (.h5ad; a .csv beside it)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--key-added", default="cellformer", help="the prefix the pieces were written with")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from cellformer.prediction.writing import merge_annotations, table_path

    out = merge_annotations(args.pieces, out=args.out, overwrite=args.overwrite, key_added=args.key_added)
    print(f"{len(args.pieces)} pieces merged: {out} and {table_path(out)}")
    return 0
