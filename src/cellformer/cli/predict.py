"""``cellformer predict RUN_DIR INPUT.h5ad --out OUTPUT.h5ad [--overwrite]``."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="annotate an .h5ad with a trained run's predictions (writes a copy)",
        description=(
            "Predict cell types for INPUT.h5ad with a run directory (transformer or baseline) and write an "
            "annotated copy: obs cellformer_prediction / cellformer_confidence / cellformer_unknown, "
            "obsm cellformer_proba and X_cellformer, uns cellformer (classes, params). Genes are matched "
            "by name. A UMAP of the embeddings is written beside the output as OUTPUT_umap.png. "
            "The input file is never modified."
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
        "--min-gene-overlap", type=float, help="minimum fraction of the model's genes present"
    )
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP plot")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import anndata as ad

    from cellformer.prediction import predict_file

    options = {"layer": args.layer, "gene_key": args.gene_key, "min_overlap": args.min_gene_overlap}
    written = predict_file(
        args.run_dir,
        args.input,
        out=args.out,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        umap=not args.no_umap,
        **{k: v for k, v in options.items() if v is not None},
    )
    adata = ad.read_h5ad(written["h5ad"], backed="r")
    obs = adata.obs
    n = adata.n_obs
    print(f"{n} cells annotated; {int(obs['cellformer_unknown'].sum())} flagged unknown")
    counts = obs["cellformer_prediction"].value_counts()
    for name, count in counts[counts > 0].items():
        print(f"  {name}: {count}")
    adata.file.close()
    print(f"annotated copy: {written['h5ad']}")
    if "umap" in written:
        print(f"UMAP: {written['umap']}")
    return 0
