"""``cellformer prepare INPUT.h5ad --label-key cell_type --out DIR``: tokenize and split a dataset."""

from __future__ import annotations

import argparse

from cellformer.config import PrepareConfig

_DEFAULTS = PrepareConfig()
TOKENIZERS = ("rank", "binned", "hybrid")  # cellformer.tokenize (listed here so --help stays instant)


def fraction_or_off(text: str) -> float | None:
    """A fraction in [0, 1], or ``off`` / ``none`` / ``no`` (the step is switched off)."""
    if text.strip().lower() in ("off", "none", "no"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, or 'off'; got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prepare",
        help="turn an .h5ad into a tokenized, split dataset directory",
        description=(
            "Read an .h5ad in chunks, check it, run QC, build the gene vocabulary, split cells stratified by "
            "label and tokenize them into a memory-mapped store under --out. The input is never modified."
        ),
    )
    parser.add_argument("input", help="training .h5ad (split train/val/test unless --test is given)")
    parser.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    parser.add_argument(
        "--label-key",
        default=_DEFAULTS.label_key,
        help="obs column with the labels (%(default)s); cells whose label is missing (NaN, or the text '', "
        "'nan', 'None', 'NA', 'null') are left out and counted in one line",
    )
    parser.add_argument(
        "--allow-many-classes",
        action="store_true",
        help="accept a label column with more than 50 classes that are more than 10%% of the labelled cells "
        "or a quarter of them single-cell classes (refused by default: such a column, e.g. n_counts, is "
        "rarely one of cell types)",
    )
    parser.add_argument("--test", help="separate .h5ad split into validation/test (60/40 by default)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    data = parser.add_argument_group("input matrix")
    data.add_argument("--layer", help="read this layer instead of X ('raw.X' reads adata.raw.X)")
    data.add_argument("--gene-key", help="var column naming genes (e.g. Ensembl ids) instead of var_names")
    data.add_argument(
        "--input-normalized",
        action="store_true",
        help="values are normalized (log1p is detected and undone; FPKM/TPM used as-is); count QC is skipped",
    )
    data.add_argument(
        "--input-transform",
        choices=("auto", "log1p", "none"),
        default=_DEFAULTS.input_transform,
        help="with --input-normalized (an error without it): how the values are stored; auto detects "
        "log1p (values below 30), log1p undoes it (refused for larger values), none uses them as they are "
        "(%(default)s)",
    )

    tok = parser.add_argument_group("tokens")
    tok.add_argument(
        "--tokenizer",
        default=_DEFAULTS.tokenizer,
        metavar="{" + ",".join(TOKENIZERS) + "}",  # checked by PrepareConfig (one-line error)
        help="rank: genes ordered by normalized expression (Geneformer); binned: highly variable genes "
        "with value bins (scGPT); hybrid: ranked genes with value bins (%(default)s)",
    )
    tok.add_argument(
        "--max-genes", type=int, default=_DEFAULTS.max_genes, help="genes per cell (%(default)s)"
    )
    tok.add_argument(
        "--n-hvg", type=int, default=_DEFAULTS.n_hvg, help="binned: highly variable genes (%(default)s)"
    )
    tok.add_argument("--n-bins", type=int, default=_DEFAULTS.n_bins, help="binned: value bins (%(default)s)")
    tok.add_argument(
        "--batch-key",
        help="obs column with the batch: one context token per cell after <CLS>, with its own embedding",
    )
    tok.add_argument(
        "--context-key",
        dest="context_keys",
        action="append",
        default=[],
        metavar="COL",
        help="another categorical obs column (assay, modality, ...) as a context token; repeatable",
    )
    tok.add_argument(
        "--previous-layer", help="time-course variant: layer holding each cell's previous-time-point profile"
    )
    tok.add_argument(
        "--time-key",
        help="time-course variant: obs column with time points (numbers or ordered categories); each cell's "
        "previous profile is derived from its nearest training cells at the preceding time point",
    )
    tok.add_argument(
        "--previous",
        choices=("auto",),
        help="'auto': derive the previous profile from --time-key (the default when --time-key is given)",
    )

    qc = parser.add_argument_group("quality control (each step can be switched off)")
    qc.add_argument(
        "--min-genes",
        type=int,
        default=_DEFAULTS.min_genes,
        help="min genes per cell; 0 = off (default: 200, or 1%% of the file's genes on smaller gene panels)"
    )
    qc.add_argument(
        "--min-cells", type=int, default=_DEFAULTS.min_cells, help="min cells per gene; 0 = off (%(default)s)"
    )
    qc.add_argument(
        "--max-mito-fraction",
        type=fraction_or_off,
        default=_DEFAULTS.max_mito_fraction,
        metavar="FRACTION|off",
        help="max mitochondrial fraction of a cell's counts, 0-1; 'off' (or 'none') disables (%(default)s)",
    )
    qc.add_argument("--doublets", action="store_true", help="remove doublets found by scrublet")

    split = parser.add_argument_group("splits")
    split.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="random seed (%(default)s)")
    split.add_argument(
        "--train-fraction",
        type=float,
        default=_DEFAULTS.train_fraction,
        help="without --test: fraction of cells for training (%(default)s)",
    )
    split.add_argument(
        "--val-fraction",
        type=float,
        default=_DEFAULTS.val_fraction,
        help="without --test: fraction of cells for validation; the rest is the test split (%(default)s)",
    )
    split.add_argument(
        "--test-val-fraction",
        type=float,
        default=_DEFAULTS.test_val_fraction,
        help="with --test: fraction of the test file used for validation (%(default)s)",
    )
    split.add_argument(
        "--min-gene-overlap",
        type=float,
        default=_DEFAULTS.min_gene_overlap,
        help="with --test: minimum fraction of training genes the test file must have (%(default)s)",
    )

    run_group = parser.add_argument_group("execution")
    run_group.add_argument(
        "--chunk-size", type=int, default=_DEFAULTS.chunk_size, help="cells read at a time (%(default)s)"
    )
    run_group.add_argument(
        "--workers", type=int, default=_DEFAULTS.workers, help="tokenizer processes (%(default)s)"
    )
    parser.set_defaults(run=run)
    return parser


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    """The :class:`PrepareConfig` given by the parsed flags (every field has a flag of the same name)."""
    values = {name: getattr(args, name) for name in PrepareConfig.field_names() if hasattr(args, name)}
    return PrepareConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from cellformer.data.prepare import prepare_with_config

    if getattr(args, "previous", None) == "auto" and not getattr(args, "time_key", None):
        from cellformer.errors import ConfigError

        raise ConfigError("--previous auto derives the previous profile from a time column: give --time-key")
    config = config_from_args(args)
    # the library logs the one summary line (cells, genes, classes, output directory, split sizes)
    prepare_with_config(args.input, out=args.out, config=config, test=args.test, overwrite=args.overwrite)
    return 0
