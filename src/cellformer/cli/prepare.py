"""``cellformer prepare INPUT.h5ad --label-key cell_type --out DIR``: tokenize and split a dataset."""

from __future__ import annotations

import argparse

from cellformer.config import PrepareConfig

_DEFAULTS = PrepareConfig()
TOKENIZERS = ("rank", "binned", "hybrid")  # cellformer.tokenize (listed here so --help stays instant)


def _help(name: str, *, default: bool = False) -> str:
    """The ``--help`` text of flag ``name``: the PrepareConfig field's own help (declared once, there)."""
    text = PrepareConfig.help(name).replace("%", "%%")
    return text + " (%(default)s)" if default else text


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
        help=_help("label_key", default=True),
    )
    parser.add_argument(
        "--allow-many-classes",
        action="store_true",
        help=_help("allow_many_classes"),
    )
    parser.add_argument("--test", help="separate .h5ad split into validation/test (60/40 by default)")
    parser.add_argument(
        "--unlabelled",
        nargs="+",
        default=[],
        metavar="H5AD",
        help="h5ad files of cells without labels (e.g. more cells of the same tissue): QC'd, aligned to the "
        "input's genes and tokenized into the split 'unlabelled' for train --pretrain-epochs",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    data = parser.add_argument_group("input matrix")
    data.add_argument("--layer", help=_help("layer"))
    data.add_argument("--gene-key", help=_help("gene_key"))
    data.add_argument(
        "--input-normalized",
        action="store_true",
        help=_help("input_normalized"),
    )
    data.add_argument(
        "--input-transform",
        choices=("auto", "log1p", "none"),
        default=_DEFAULTS.input_transform,
        help=_help("input_transform", default=True),
    )

    tok = parser.add_argument_group("tokens")
    tok.add_argument(
        "--tokenizer",
        default=_DEFAULTS.tokenizer,
        metavar="{" + ",".join(TOKENIZERS) + "}",  # checked by PrepareConfig (one-line error)
        help=_help("tokenizer", default=True),
    )
    tok.add_argument(
        "--max-genes", type=int, default=_DEFAULTS.max_genes, help=_help("max_genes", default=True)
    )
    tok.add_argument("--n-hvg", type=int, default=_DEFAULTS.n_hvg, help=_help("n_hvg", default=True))
    tok.add_argument("--n-bins", type=int, default=_DEFAULTS.n_bins, help=_help("n_bins", default=True))
    tok.add_argument(
        "--value-bins",
        choices=("cell", "gene"),
        default=_DEFAULTS.value_bins,
        help=_help("value_bins", default=True),
    )
    tok.add_argument(
        "--batch-key",
        help=_help("batch_key"),
    )
    tok.add_argument(
        "--context-key",
        dest="context_keys",
        action="append",
        default=[],
        metavar="COL",
        help=_help("context_keys"),
    )
    tok.add_argument("--previous-layer", help=_help("previous_layer"))
    tok.add_argument(
        "--time-key",
        help=_help("time_key"),
    )
    tok.add_argument(
        "--previous",
        choices=("auto",),
        help="'auto': derive the previous profile from --time-key (the default when --time-key is given)",
    )

    qc = parser.add_argument_group("quality control (each step can be switched off)")
    qc.add_argument("--min-genes", type=int, default=_DEFAULTS.min_genes, help=_help("min_genes"))
    qc.add_argument(
        "--min-cells", type=int, default=_DEFAULTS.min_cells, help=_help("min_cells", default=True)
    )
    qc.add_argument(
        "--max-mito-fraction",
        type=fraction_or_off,
        default=_DEFAULTS.max_mito_fraction,
        metavar="FRACTION|off",
        help=_help("max_mito_fraction", default=True),
    )
    qc.add_argument("--doublets", action="store_true", help=_help("doublets"))

    split = parser.add_argument_group("splits")
    split.add_argument("--seed", type=int, default=_DEFAULTS.seed, help=_help("seed", default=True))
    split.add_argument(
        "--train-fraction",
        type=float,
        default=_DEFAULTS.train_fraction,
        help=_help("train_fraction", default=True),
    )
    split.add_argument(
        "--val-fraction",
        type=float,
        default=_DEFAULTS.val_fraction,
        help=_help("val_fraction", default=True),
    )
    split.add_argument(
        "--test-val-fraction",
        type=float,
        default=_DEFAULTS.test_val_fraction,
        help=_help("test_val_fraction", default=True),
    )
    split.add_argument(
        "--min-gene-overlap",
        type=float,
        default=_DEFAULTS.min_gene_overlap,
        help=_help("min_gene_overlap", default=True),
    )

    run_group = parser.add_argument_group("execution")
    run_group.add_argument(
        "--chunk-size", type=int, default=_DEFAULTS.chunk_size, help=_help("chunk_size", default=True)
    )
    run_group.add_argument(
        "--workers", type=int, default=_DEFAULTS.workers, help=_help("workers", default=True)
    )
    parser.set_defaults(run=run)
    return parser


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    """The :class:`PrepareConfig` given by the parsed flags (every field has a flag of the same name)."""
    values = {name: getattr(args, name) for name in PrepareConfig.field_names() if hasattr(args, name)}
    return PrepareConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from cellformer.preparation.prepare import prepare_with_config

    if getattr(args, "previous", None) == "auto" and not getattr(args, "time_key", None):
        from cellformer.errors import ConfigError

        raise ConfigError("--previous auto derives the previous profile from a time column: give --time-key")
    config = config_from_args(args)
    # the library logs the one summary line (cells, genes, classes, output directory, split sizes)
    prepare_with_config(
        args.input,
        out=args.out,
        config=config,
        test=args.test,
        unlabelled=args.unlabelled,
        overwrite=args.overwrite,
    )
    return 0
