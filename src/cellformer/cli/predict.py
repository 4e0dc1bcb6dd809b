"""``cellformer predict RUN_DIR INPUT.h5ad --out OUTPUT.h5ad [--annotations-only] [--shard K/N]
[--accelerator gpu --devices N --num-nodes M]``."""

from __future__ import annotations

import argparse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of cells, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of cells, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from cellformer.calibration.unknown import DEFAULT_QUANTILE

    parser = subparsers.add_parser(
        "predict",
        help="annotate an .h5ad with a trained run's predictions (writes a copy)",
        description=(
            "Predict cell types for INPUT.h5ad with a run directory (transformer or baseline) and write an "
            "annotated, gzip-compressed copy: obs cellformer_prediction / cellformer_confidence / "
            "cellformer_unknown / cellformer_unknown_score (higher = less like any training type; the flag "
            "is score > threshold), obsm cellformer_proba, X_cellformer (the model's embedding: <CLS> for a "
            "transformer, PCA of the training features for logreg/knn, the hidden layer for mlp; "
            "uns cellformer params embedding says which) and X_cellformer_umap, uns cellformer (classes, "
            "params). Confidence uses the temperature stored in the run; cellformer_unknown marks cells "
            "whose score is above the --unknown-quantile of the validation cells' scores (so about 9%% of "
            "cells of known types are flagged by design) and cells with no expressed model gene. "
            "Genes are matched by name. The input is read --chunk-size cells at a time and never held whole; "
            "the copy is the input file with the annotations added (--annotations-only writes them alone, "
            "with a CSV table; --shard K/N annotates one of N pieces, joined by `cellformer "
            "merge-annotations`; --devices N --num-nodes M predict with a transformer in N x M processes "
            "through Lightning, each taking a share of every chunk). A UMAP of the embeddings is written "
            "beside the output as OUTPUT_umap.png "
            "(up to 50,000 cells unless --umap). The input file and the run directory are never modified."
        ),
    )
    parser.add_argument("run_dir", help="run directory made by `cellformer train` or `cellformer baseline`")
    parser.add_argument("input", help="cells to annotate (.h5ad)")
    parser.add_argument("--out", required=True, help="annotated copy to write (.h5ad)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--batch-size", type=int, default=256, help="cells per forward pass (%(default)s)")
    parser.add_argument("--layer", help="matrix to read instead of the training one (e.g. counts, raw.X)")
    parser.add_argument("--gene-key", help="var column with gene names instead of the training one")
    parser.add_argument(
        "--input-normalized",
        action="store_true",
        default=None,
        help="the values are normalized, not raw counts (e.g. log1p of normalize_total): log1p is detected "
        "and undone with expm1, other values are used as they are; the default is the training setting",
    )
    parser.add_argument(
        "--input-transform",
        choices=("auto", "log1p", "none"),
        help="with --input-normalized (an error without it): how the values are stored, as in prepare; "
        "auto detects log1p (values below 30), log1p undoes it, none uses them as they are (auto)",
    )
    parser.add_argument(
        "--min-gene-overlap",
        type=_fraction,
        metavar="FRACTION",
        help="minimum fraction in (0, 1] of the model's genes that must be in the input "
        "(default: the value the data was prepared with, 0.5 unless changed)",
    )
    parser.add_argument(
        "--key-added",
        default="cellformer",
        help="prefix of the keys written (%(default)s); existing keys of that name are replaced with a warning",
    )
    parser.add_argument(
        "--unknown-quantile",
        type=_fraction,
        default=DEFAULT_QUANTILE,
        metavar="Q",
        help="flag cells whose unknown score is above this quantile of the validation cells' scores "
        "(%(default)s: about 9%% of cells of known types are flagged by design; 0.95: about 5%%)",
    )
    parser.add_argument(
        "--chunk-size",
        type=_positive,
        default=20_000,
        metavar="N",
        help="cells read, tokenized and predicted at a time: peak memory grows with it, not with the file "
        "(%(default)s; the results do not depend on it)",
    )
    parser.add_argument(
        "--annotations-only",
        action="store_true",
        help="write only the annotations: a small OUTPUT.h5ad (the new obs columns, obsm arrays and uns) and "
        "OUTPUT.csv (cell, prediction, confidence, unknown, unknown_score), not a copy of the input",
    )
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="annotate only the K-th of N contiguous pieces of the cells (annotations only), e.g. for a "
        "SLURM array job with K=$SLURM_ARRAY_TASK_ID; join the pieces with `cellformer merge-annotations`",
    )
    parser.add_argument(
        "--accelerator",
        choices=("cpu", "gpu", "auto"),
        default="auto",
        help="where a transformer's forward pass runs: auto (the default) is a GPU where there is one, else "
        "the CPU; gpu needs CUDA",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        metavar="N",
        help="processes per node, one per device (%(default)s): above 1, Lightning starts this command again "
        "once per extra device and each process predicts a share of every chunk; the first writes the "
        "output (transformer runs only)",
    )
    parser.add_argument(
        "--num-nodes",
        type=int,
        default=1,
        metavar="M",
        help="machines running --devices processes each, started by the scheduler as for `cellformer train` "
        "(%(default)s)",
    )
    umap = parser.add_mutually_exclusive_group()
    umap.add_argument(
        "--umap", action="store_true", default=None, help="draw the UMAP at any number of cells"
    )
    umap.add_argument("--no-umap", action="store_true", help="skip the UMAP plot")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import anndata as ad

    from cellformer.errors import ConfigError
    from cellformer.prediction import predict_file
    from cellformer.prediction.annotate import calibration_note, unknown_note

    if args.input_transform is not None and not args.input_normalized:
        raise ConfigError(
            f"--input-transform {args.input_transform} describes normalized values: add --input-normalized "
            "(raw counts are always used as they are)"
        )
    options = {
        "layer": args.layer,
        "gene_key": args.gene_key,
        "min_gene_overlap": args.min_gene_overlap,
        "input_normalized": args.input_normalized,
        "input_transform": args.input_transform,
    }
    key = args.key_added
    if args.devices * args.num_nodes > 1:
        from cellformer.cli import quiet_lightning

        quiet_lightning()
    written = predict_file(
        args.run_dir,
        args.input,
        out=args.out,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        umap=False if args.no_umap else args.umap,
        key_added=key,
        chunk_size=args.chunk_size,
        annotations_only=args.annotations_only,
        shard=args.shard,
        unknown_quantile=args.unknown_quantile,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        **{k: v for k, v in options.items() if v is not None},
    )
    if not written:  # another process of a multi-process run: the first one reports
        return 0
    adata = ad.read_h5ad(written["h5ad"], backed="r")
    obs = adata.obs
    n = adata.n_obs
    params = adata.uns[key]["params"]
    n_unknown = int(obs[f"{key}_unknown"].sum())
    n_empty = int(params.get("n_no_genes", 0))
    empty = f" ({n_empty} with no expressed model gene)" if n_empty else ""
    share = f" ({100 * n_unknown / max(n, 1):.1f}%)"
    print(f"{n} cells annotated; {n_unknown}{share} flagged unknown{empty}; {calibration_note(params)}")
    print(f"  {unknown_note(params)}")
    counts = obs[f"{key}_prediction"].value_counts()
    for name, count in counts[counts > 0].items():
        print(f"  {name}: {count}")
    adata.file.close()
    if "csv" in written:
        print(f"annotations: {written['h5ad']} and {written['csv']}")
    else:
        print(f"annotated copy: {written['h5ad']}")
    if "umap" in written:
        print(f"UMAP: {written['umap']}")
    return 0
