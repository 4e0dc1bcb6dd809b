"""Rank (Geneformer) vs binned (scGPT) vs hybrid tokens, measured: same model, same budget, same cells.

For every labelled dataset in ``../shared/data`` this script

1. prepares the file once per tokenizer (``rank``, ``binned``, ``hybrid``) with the same seed, QC,
   splits and ``--max-genes`` (so every run sees exactly the same train / validation / test cells),
2. times the tokenizer alone: ``fit`` on the training cells + ``transform`` of every cell, chunk by
   chunk, on the expression the prepared dataset was made from (best of ``--repeats``; the tokens are
   checked against the stored ones),
3. trains the same small transformer on each, once per training seed (``--seeds``; fixed number of
   epochs, no early stopping; the checkpoint with the lowest validation loss is kept, as
   ``cellformer train`` does), so the spread over seeds shows how much of a difference is noise,
4. trains the binned model once more without its value embedding (``binned-no-values``: the same HVG
   gene tokens, ``n_values=0``), to separate what the values add from what the choice of genes does,
5. fits the logistic-regression baseline (``cellformer.baseline(..., method="logreg")``) on the same
   cells, and
6. evaluates everything on the test split (``cellformer.evaluate``: macro-F1 with a 95 % percentile
   bootstrap CI over test cells) and prints one table; ``--reports DIR`` also writes a
   ``cellformer compare`` report per dataset (paired tests between the runs).

Training cells/s is training cells x epochs / the seconds the run's log records (all epochs, each
including its validation pass); for the baseline, training cells / its fit time (which includes
reading the expression back from the input file). Timings on a shared machine are noisy.

Usage: ``python bench/tokenizers.py [--epochs 10] [--max-genes 64] [--reports /tmp/reports]``
(about 10 minutes on 2 shared cores with the defaults).
"""

from __future__ import annotations

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOKENIZERS = ("rank", "binned", "hybrid")
# model name -> (tokenizer, model options): "binned-no-values" trains on the binned dataset's gene
# tokens with the value embedding switched off (n_values=0), which separates what the values add
# from what the choice of genes (HVGs, in gene order) does
MODELS = {
    "rank": ("rank", {}),
    "binned": ("binned", {}),
    "hybrid": ("hybrid", {}),
    "binned-no-values": ("binned", {"n_values": 0}),
}


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    file: str
    label_key: str
    options: dict[str, Any]
    note: str
    symbols: str | None = "var_names"  # where gene symbols are (None: no names, e.g. bladder's gene_0...)


DATASETS = (
    Dataset(
        "bladder", "mouse_bladder_2100.h5ad", "cell_type", {}, "2100 cells, UMI counts, 16 classes", None
    ),
    Dataset(
        "pbmc68k",
        "pbmc68k_reduced.h5ad",
        "cell_type",
        {"input_normalized": True},
        "700 cells, log1p-normalized, 765 preselected genes, 10 classes",
    ),
    Dataset(
        "hsmm",
        "hsmm_timecourse.h5ad",
        "State",
        {"input_normalized": True},
        "271 cells, FPKM, label = Monocle State 1-3 (computed from expression, not a cell type)",
        "gene_short_name",
    ),
)


def model_options(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The one model size and budget every tokenizer gets."""
    return dict(
        members=1,  # one transformer, as docs/tokenizers.md measured (not the default ensemble)
        n_layers=2,
        d_model=64,
        n_heads=4,
        ff_hidden=128,
        head_hidden=64,
        dropout=0.1,
        max_length=args.max_genes + 1,  # <CLS> + every gene token
        batch_size=32,
        max_epochs=args.epochs,
        lr=args.lr,
        warmup_fraction=0.1,
        patience=0,  # fixed number of epochs
        seed=seed,
        progress_bar=False,
    )


# "Housekeeping" for the token-share measurement: ribosomal-protein and mitochondrially encoded genes and
# a fixed list of ubiquitously high genes (cytoskeleton, translation, ferritin, ubiquitin, MALAT1)
HOUSEKEEPING = re.compile(r"^(RP[LS]P?\d+[A-Z]{0,2}\d?|MT-.*)$")
HOUSEKEEPING_LIST = {
    "ACTB", "ACTG1", "GAPDH", "B2M", "EEF1A1", "EEF1G", "EEF2", "TPT1", "FTL", "FTH1", "TMSB4X",
    "TMSB10", "MALAT1", "UBC", "UBB", "PPIA", "PFN1", "CFL1", "MYL6", "NACA", "EIF1", "HSP90AB1",
}  # fmt: skip


def housekeeping_mask(dataset: Dataset, genes: list[str]) -> np.ndarray | None:
    """Which vocabulary genes count as housekeeping (``None`` when the file has no gene symbols)."""
    if dataset.symbols is None:
        return None
    import anndata as ad

    adata = ad.read_h5ad(DATA / dataset.file, backed="r")
    names = adata.var_names if dataset.symbols == "var_names" else adata.var[dataset.symbols]
    symbol = dict(zip(map(str, adata.var_names), map(str, names), strict=True))
    adata.file.close()
    return np.array(
        [bool(HOUSEKEEPING.match(symbol[g])) or symbol[g] in HOUSEKEEPING_LIST for g in genes], dtype=bool
    )


def housekeeping_share(prepared, mask: np.ndarray) -> float:
    """Fraction of the stored gene tokens (specials and context tokens left out) that are housekeeping."""
    from cellformer.tokens import N_SPECIAL

    ids = np.asarray(prepared.store.ids).astype(np.int64) - N_SPECIAL
    genes = ids[(ids >= 0) & (ids < len(mask))]
    return float(mask[genes].mean())


def top_expressed_share(X, mask: np.ndarray, k: int) -> float:
    """The same share for the plain top-``k`` genes of each cell by expression (no median, no HVGs)."""
    hits = total = 0
    for i in range(X.shape[0]):
        start, stop = X.indptr[i], X.indptr[i + 1]
        top = X.indices[start:stop][np.argsort(-X.data[start:stop], kind="stable")[:k]]
        hits += int(mask[top].sum())
        total += len(top)
    return hits / max(total, 1)


def tokenization_speed(prepared, repeats: int, chunk_size: int = 2048) -> float:
    """Cells/s of the tokenizer alone: fit on the training cells, transform all cells, chunk by chunk."""
    from cellformer.config import PrepareConfig
    from cellformer.preparation.expression import PreparedExpression
    from cellformer.tokenize.base import get_tokenizer_class

    config = PrepareConfig.from_dict(prepared.meta["config"])
    n = len(prepared.labels)
    X = PreparedExpression(prepared).read(np.arange(n))
    train = np.sort(prepared.splits["train"])
    train_chunks = [X[train[i : i + chunk_size]] for i in range(0, len(train), chunk_size)]
    chunks = [X[i : i + chunk_size] for i in range(0, n, chunk_size)]
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        tokenizer = get_tokenizer_class(config.tokenizer).from_config(config)
        tokenizer.fit(train_chunks)
        parts = [tokenizer.transform(chunk) for chunk in chunks]
        best = min(best, time.perf_counter() - started)
    stored = prepared.store.subset(np.arange(n))
    ids = np.concatenate([p.ids for p in parts])
    if not np.array_equal(ids, stored.ids):
        raise AssertionError(f"re-tokenized cells differ from the tokens stored in {prepared.path}")
    return n / best


def run_dataset(dataset: Dataset, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    import cellformer
    from cellformer.preparation.prepared import PreparedData

    log = logging.getLogger("bench")
    path = DATA / dataset.file
    rows, runs = [], []
    shares: dict[str, float] = {}  # housekeeping share of gene tokens
    mask = None
    for name in TOKENIZERS:
        prepared_dir = work / dataset.name / f"prepared-{name}"
        cellformer.prepare(
            path,
            out=prepared_dir,
            label_key=dataset.label_key,
            tokenizer=name,
            max_genes=args.max_genes,
            n_hvg=args.n_hvg,
            seed=args.split_seed,
            **dataset.options,
        )
        prepared = PreparedData(prepared_dir)
        tok_speed = tokenization_speed(prepared, args.repeats)
        if name == TOKENIZERS[0]:
            mask = housekeeping_mask(dataset, prepared.genes)
            if mask is not None:
                from cellformer.preparation.expression import PreparedExpression

                X = PreparedExpression(prepared).read(np.arange(len(prepared.labels)))
                shares["top-expressed"] = top_expressed_share(X, mask, args.max_genes)
                shares["vocabulary"] = float(mask.mean())
        if mask is not None:
            shares[name] = housekeeping_share(prepared, mask)
        n_train = len(prepared.splits["train"])
        for model, (tokenizer, options) in MODELS.items():
            if tokenizer != name or model not in args.models:
                continue
            for seed in args.seeds:
                run = cellformer.train(
                    prepared_dir,
                    out=work / dataset.name / f"{model}-seed{seed}",
                    **model_options(args, seed),
                    **options,
                )
                metrics = cellformer.evaluate(run)
                speed = n_train * metrics["model"]["epochs"] / metrics["model"]["train_seconds"]
                rows.append(_row(dataset, model, seed, metrics, speed, tok_speed))
                runs.append(run)
                log.info("%s %s seed %d: macro-F1 %.3f", dataset.name, model, seed, metrics["macro_f1"])
    baseline = cellformer.baseline(
        work / dataset.name / "prepared-rank",
        method="logreg",
        out=work / dataset.name / "logreg",
        seed=args.seeds[0],
    )
    metrics = cellformer.evaluate(baseline)
    n_train = len(PreparedData(work / dataset.name / "prepared-rank").splits["train"])
    speed = n_train / metrics["model"]["train_seconds"]
    rows.append(_row(dataset, "logreg", args.seeds[0], metrics, speed, None))
    runs.append(baseline)
    if args.reports is not None:
        cellformer.compare(runs, out=Path(args.reports) / dataset.name, overwrite=True)
    for row in rows:
        row["housekeeping"] = shares
    return rows


def _row(
    dataset: Dataset,
    model: str,
    seed: int,
    metrics: dict[str, Any],
    train_speed: float,
    tok_speed: float | None,
) -> dict[str, Any]:
    ci = metrics["ci"]["macro_f1"]
    return {
        "dataset": dataset.name,
        "model": model,
        "seed": seed,
        "n_test": metrics["n_cells"],
        "macro_f1": metrics["macro_f1"],
        "ci_low": ci[0],
        "ci_high": ci[1],
        "accuracy": metrics["accuracy"],
        "train_cells_s": train_speed,
        "tokenize_cells_s": tok_speed,
        "epochs": metrics["model"]["epochs"],
        "n_parameters": metrics["model"]["n_parameters"],
    }


def print_tables(rows: list[dict[str, Any]]) -> None:
    print(
        "| dataset | model | seed | test cells | macro-F1 [95% CI] | accuracy | training cells/s "
        "| tokenization cells/s |"
    )
    print("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        tok = "—" if r["tokenize_cells_s"] is None else f"{r['tokenize_cells_s']:,.0f}"
        print(
            f"| {r['dataset']} | {r['model']} | {r['seed']} | {r['n_test']} | {r['macro_f1']:.3f} "
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['accuracy']:.3f} | {r['train_cells_s']:,.0f} | {tok} |"
        )
    print("\nmacro-F1 per training seed (mean; the CI above is over test cells, this spread is over seeds)\n")
    models = list(dict.fromkeys(r["model"] for r in rows))
    print(f"| dataset | {' | '.join(models)} |")
    print("| --- |" + " --- |" * len(models))
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        cells = []
        for model in models:
            scores = [r["macro_f1"] for r in rows if r["dataset"] == dataset and r["model"] == model]
            listed = ", ".join(f"{x:.3f}" for x in scores)
            cells.append(f"{np.mean(scores):.3f} ({listed})" if len(scores) > 1 else listed)
        print(f"| {dataset} | {' | '.join(cells)} |")
    print(
        "\nshare of gene tokens that are housekeeping genes (ribosomal RPL/RPS, MT-, ACTB, GAPDH, B2M, EEF1A1, "
        "TPT1, FTL/FTH1, TMSB4X, MALAT1, ...; datasets with gene symbols)\n"
    )
    print("| dataset | in the vocabulary | top expressed per cell | rank | binned | hybrid |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        shares = next(r["housekeeping"] for r in rows if r["dataset"] == dataset)
        if shares:
            keys = ("vocabulary", "top-expressed", *TOKENIZERS)
            print(f"| {dataset} | " + " | ".join(f"{100 * shares[k]:.1f}%" for k in keys) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs, the same for every model")
    parser.add_argument("--max-genes", type=int, default=64, help="gene tokens per cell (all tokenizers)")
    parser.add_argument("--n-hvg", type=int, default=2000, help="binned: highly variable genes")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--split-seed", type=int, default=0, help="prepare: QC, split seed (all runs)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (each model once per seed)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: more oversubscribe a shared 2-core machine)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="tokenizer timings: best of this many")
    parser.add_argument("--datasets", nargs="+", default=[d.name for d in DATASETS])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--work", type=Path, help="keep prepared data and runs here (default: a temp dir)")
    parser.add_argument("--reports", type=Path, help="write a `cellformer compare` report per dataset here")
    parser.add_argument("--json", type=Path, help="also write the table rows as JSON")
    args = parser.parse_args(argv)

    import lightning.pytorch  # noqa: F401  (sets its own log levels at import: quiet them after)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("bench").setLevel(logging.INFO)
    for name in (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "lightning.pytorch.utilities.rank_zero",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cellformer-bench-") as tmp:
        work = args.work or Path(tmp)
        for dataset in DATASETS:
            if dataset.name in args.datasets:
                rows += run_dataset(dataset, args, work)
    total = time.perf_counter() - started
    print(
        f"\nsame model for every tokenizer: {json.dumps(model_options(args, args.seeds[0]))}; "
        f"n_hvg={args.n_hvg}; torch threads {args.threads}; total {total / 60:.1f} min\n"
    )
    print_tables(rows)
    for dataset in DATASETS:
        if dataset.name in args.datasets:
            print(f"\n{dataset.name}: {dataset.note}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
