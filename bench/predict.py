"""Atlas-scale prediction (issue 15): wall time, cells/s and peak memory of ``predict``, before and after
streaming, and the transformer forward's achieved FLOP/s against a dense matmul measured in the same run.

1. Prepares ``mouse_bladder_2100`` from ``../shared/data`` and trains the default transformer and the
   logreg baseline on it (cached in ``--work``).
2. Writes files of N cells resampled from the same file (rows drawn with replacement, CSR written chunk by
   chunk, never held whole; not kept in the repo).
3. Runs each prediction in a fresh process and reads its peak RSS (``ru_maxrss``):
   - *before*: today's in-memory path as the old ``predict_file`` ran it (``anndata.read_h5ad`` of the whole
     file, ``cellformer.predict``, ``write_h5ad`` of the annotated copy), on the smallest N only;
   - *after*: ``predict_file(..., annotations_only=True)`` (streaming, chunk 20,000 cells), and the full
     annotated copy on the smallest N.
   No UMAP in either (it is skipped above 50,000 cells anyway).
4. Times the transformer forward alone on tokenized cells of the file and counts its FLOPs (projections,
   attention, feed-forward, head; every ensemble member), against a 2048 x 2048 float32 matmul with the
   same threads, and the same forward of the previous defaults (one transformer of two blocks, trained on
   the same cells) for the ratio new / previous.
5. Times ``evaluate``'s bootstrap (CIs, and the paired comparison) on 1,000,000 predictions against
   resampling the cells one by one (``--bootstrap-only`` runs just this, in seconds).

Usage::

    python bench/predict.py --quick          # 100,000 cells (about 15 min on 2 cores)
    python bench/predict.py                  # 100,000 and 1,000,000 cells (about 1.5 h on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from labelled_data import recalibrated, run_digest

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent / "shared" / "data" / "mouse_bladder_2100.h5ad"


def resample(source: Path, out: Path, n_cells: int, seed: int = 0, chunk: int = 50_000) -> None:
    """``n_cells`` rows of ``source`` drawn with replacement, written as CSR chunk by chunk."""
    import anndata as ad
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    cells = ad.read_h5ad(source)
    X = cells.X.tocsr()
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, cells.n_obs, n_cells)
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w") as file:
        file.attrs["encoding-type"], file.attrs["encoding-version"] = "anndata", "0.1.0"
        obs = pd.DataFrame(
            {"cell_type": pd.Categorical(cells.obs["cell_type"].to_numpy()[rows])},
            index=[f"cell{i}" for i in range(n_cells)],
        )
        write_elem(file, "obs", obs)
        write_elem(file, "var", cells.var)
        group = file.create_group("X")
        group.attrs["encoding-type"], group.attrs["encoding-version"] = "csr_matrix", "0.1.0"
        group.attrs["shape"] = (n_cells, cells.n_vars)
        data = group.create_dataset("data", (0,), maxshape=(None,), dtype="float32", chunks=(1 << 20,))
        indices = group.create_dataset("indices", (0,), maxshape=(None,), dtype="int32", chunks=(1 << 20,))
        indptr = [np.zeros(1, np.int64)]
        total = 0
        for start in range(0, n_cells, chunk):
            block = X[rows[start : start + chunk]]
            n = block.nnz
            data.resize((total + n,))
            indices.resize((total + n,))
            data[total:] = block.data.astype(np.float32)
            indices[total:] = block.indices
            indptr.append(block.indptr[1:].astype(np.int64) + total)
            total += n
        group.create_dataset("indptr", data=np.concatenate(indptr))
        for key in ("obsm", "varm", "layers", "obsp", "varp", "uns"):
            write_elem(file, key, {})
    os.replace(tmp, out)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ``ru_maxrss`` would carry the parent's across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(mode: str, run: str, input: str, out: str) -> None:
    """One measurement in this (fresh) process: prints ``{"seconds", "peak_rss_mb", "cells"}``."""
    import cellformer
    from cellformer.prediction import predict_file

    start = time.perf_counter()
    if mode == "before":
        import anndata as ad

        adata = ad.read_h5ad(input)
        annotated = cellformer.predict(adata, run)
        annotated.write_h5ad(out, compression="gzip")
        n = annotated.n_obs
    else:
        written = predict_file(
            run, input, out=out, annotations_only=mode == "after", umap=False, overwrite=True
        )
        import anndata as ad

        n = ad.read_h5ad(written["h5ad"], backed="r").n_obs
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "cells": n}))


def measure(mode: str, run: Path, input: Path, out: Path, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    args = [sys.executable, __file__, "--one", mode, str(run), str(input), str(out)]
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{mode} on {input} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def forward_flops(config, length: int) -> float:
    """Multiply-adds x 2 of one cell's forward through the encoder and the head, as prediction runs it:
    with ``<CLS>`` pooling the last block computes the ``<CLS>`` state alone (keys and values of every
    token, one query, one feed-forward row); an ensemble runs it once per member."""
    d, ff, layers = config.d_model, config.ff_hidden or 2 * config.d_model, config.n_layers
    inner = config.n_heads * (config.head_dim or d // config.n_heads)

    def block(queries: int) -> float:
        projections = 2 * (queries * d * inner + length * 2 * d * inner + queries * inner * d)
        return projections + 2 * 2 * queries * length * inner + 2 * 2 * queries * d * ff

    head = 2 * (d * config.head_hidden + config.head_hidden * config.n_classes)
    last = 1 if config.pooling == "cls" else length
    return float(config.members * ((layers - 1) * block(length) + block(last) + head))


def flops_check(run: Path, input: Path, threads: int) -> dict:
    """Achieved forward GFLOP/s on 4,096 tokenized cells of ``input`` vs a dense matmul peak."""
    import anndata as ad
    import torch

    import cellformer
    from cellformer.data.dataset import LengthBucketSampler, collate_tokens
    from cellformer.preparation.new_cells import tokenize_adata
    from cellformer.training.model_run import _TokenizedDataset

    torch.set_num_threads(threads)
    model = cellformer.load(run)
    cells = ad.read_h5ad(input, backed="r")[:4096].to_memory()
    tokens, _ = tokenize_adata(model, cells, log=False, progress=False)
    dataset = _TokenizedDataset(tokens, model.model_config.max_length)
    lengths = dataset.lengths()
    batches = [
        collate_tokens([dataset[i] for i in b]) for b in LengthBucketSampler(lengths, 256, shuffle=False)
    ]
    net = model.model
    with torch.inference_mode():
        for batch in batches[:2]:
            net(batch["ids"], batch["padding_mask"], batch.get("values"))
        start = time.perf_counter()
        for batch in batches:
            net(batch["ids"], batch["padding_mask"], batch.get("values"))
        seconds = time.perf_counter() - start
        a = torch.randn(2048, 2048)
        a @ a
        start = time.perf_counter()
        for _ in range(10):
            a @ a
        peak = 10 * 2 * 2048**3 / (time.perf_counter() - start)
    flops = sum(
        forward_flops(model.model_config, int(batch["ids"].shape[1])) * len(batch["ids"]) for batch in batches
    )
    return {
        "cells": len(lengths),
        "mean_tokens": float(np.mean(lengths)),
        "forward_cells_per_s": len(lengths) / seconds,
        "forward_gflops": flops / seconds / 1e9,
        "matmul_peak_gflops": peak / 1e9,
    }


def bootstrap_check(n_cells: int = 1_000_000, n_labels: int = 16, reference_resamples: int = 50) -> dict:
    """``evaluate``'s bootstrap (95 % CIs of accuracy and macro-F1, 1,000 resamples; and the paired
    comparison of two runs) on ``n_cells`` predictions, against resampling the cells one by one as the
    code before 2026-12-05 did (timed on ``reference_resamples`` resamples and scaled to 1,000)."""
    from cellformer.evaluation import stats

    rng = np.random.default_rng(0)
    y = rng.integers(0, n_labels, n_cells)
    a = np.where(rng.random(n_cells) < 0.85, y, rng.integers(0, n_labels, n_cells))
    b = np.where(rng.random(n_cells) < 0.80, y, rng.integers(0, n_labels, n_cells))
    start = time.perf_counter()
    stats.bootstrap_ci(y, a, n_labels)
    ci_seconds = time.perf_counter() - start
    start = time.perf_counter()
    stats.paired_comparison(y, a, b, n_labels)
    paired_seconds = time.perf_counter() - start
    start = time.perf_counter()  # the reference: cell indices drawn one by one, confusion by bincount
    for _ in range(reference_resamples):
        index = rng.integers(0, n_cells, n_cells)
        np.bincount(y[index] * n_labels + a[index], minlength=n_labels * n_labels)
    reference = (
        (time.perf_counter() - start) * stats.N_BOOTSTRAP / reference_resamples * 2
    )  # plain + stratified
    return {
        "cells": n_cells,
        "ci_seconds": ci_seconds,
        "paired_seconds": paired_seconds,
        "reference": reference,
    }


# the transformer defaults before round 9 (docs/accuracy.md): the reference of the forward's ratio
PREVIOUS_DEFAULTS = {"members": 1, "n_layers": 2}


def train_runs(work: Path) -> tuple[Path, Path, Path]:
    """The default transformer, one trained with the previous defaults, and logreg (cached in ``work``,
    each with today's unknown detector)."""
    import cellformer

    prepared, logreg = work / "prepared", work / "logreg"
    # keyed by today's defaults too (run_digest): a run cached under other defaults is not reused
    transformer = work / f"transformer-{run_digest({})}"
    previous = work / f"transformer-{run_digest(PREVIOUS_DEFAULTS)}"
    if not (prepared / "manifest.json").exists():
        cellformer.prepare(SOURCE, out=prepared)
    for run, options in ((transformer, {}), (previous, PREVIOUS_DEFAULTS)):
        if not (run / "model.safetensors").exists():
            cellformer.train(prepared, out=run, progress_bar=False, **options)
    if not (logreg / "config.json").exists():
        cellformer.baseline(prepared, method="logreg", out=logreg)
    # a cached run keeps the unknown detector it was calibrated with; predict with today's
    return (
        recalibrated(transformer, prepared),
        recalibrated(previous, prepared),
        recalibrated(logreg, prepared),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 cells only (about 15 min)")
    parser.add_argument("--cells", type=int, nargs="+", help="file sizes (default 100000 1000000)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cellformer-bench-predict"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--one", nargs=4, metavar=("MODE", "RUN", "INPUT", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--bootstrap-only",
        action="store_true",
        help="only time evaluate's bootstrap on 1,000,000 predictions",
    )
    parser.add_argument("--flops", nargs=2, metavar=("RUN", "INPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(*args.one)
        return
    if args.bootstrap_only:
        print(json.dumps(bootstrap_check()))
        return
    if args.flops:
        print(json.dumps(flops_check(Path(args.flops[0]), Path(args.flops[1]), args.threads)))
        return
    sizes = args.cells or ([100_000] if args.quick else [100_000, 1_000_000])
    args.work.mkdir(parents=True, exist_ok=True)
    print(
        f"bench/predict.py: {', '.join(f'{n:,}' for n in sizes)} cells resampled from {SOURCE.name}; "
        f"{args.threads} threads; each prediction in a fresh process (peak RSS = its VmHWM)",
        flush=True,
    )
    transformer, previous, logreg = train_runs(args.work)
    rows = []
    for n in sizes:
        path = args.work / f"cells_{n}.h5ad"
        if not path.exists():
            resample(SOURCE, path, n)
        modes = ("before", "after", "copy") if n == min(sizes) else ("after",)
        for kind, run in (("transformer", transformer), ("logreg", logreg)):
            for mode in modes:
                result = measure(mode, run, path, args.work / f"out_{kind}_{mode}_{n}.h5ad", args.threads)
                rows.append({"cells": n, "kind": kind, "mode": mode, **result})
                print(
                    f"  {n:>9,} {kind:<11} {mode:<6} {result['seconds']:8.1f} s  "
                    f"{n / result['seconds']:8.0f} cells/s  peak RSS {result['peak_rss_mb']:7.0f} MB",
                    flush=True,
                )
    print(
        "\nbefore = read whole + predict + write copy (the old predict_file); after = streaming "
        "--annotations-only; copy = streaming, annotated copy of the input"
    )
    for kind in ("transformer", "logreg"):
        by = {(r["cells"], r["mode"]): r for r in rows if r["kind"] == kind}
        n = min(sizes)
        before, after = by[(n, "before")], by[(n, "after")]
        print(
            f"{kind}, {n:,} cells: wall after/before {after['seconds'] / before['seconds']:.2f}x, "
            f"peak RSS after/before {after['peak_rss_mb'] / before['peak_rss_mb']:.2f}x"
        )
        if (1_000_000, "after") in by:
            big = by[(1_000_000, "after")]
            print(
                f"{kind}, 1,000,000 cells --annotations-only: {big['seconds'] / 60:.1f} min (target < 30 for the "
                f"transformer), peak RSS {big['peak_rss_mb'] / 1024:.2f} GB (target < 4)"
            )
    # in a fresh process too: timed in this one (after the resampling and the runs above) the same forward
    # ran ~80x slower than alone, which would measure this process's state, not the model
    forwards = {}
    for name, run in (("defaults", transformer), ("previous defaults", previous)):
        command = [sys.executable, __file__, "--flops", str(run), str(args.work / f"cells_{min(sizes)}.h5ad")]
        command += ["--threads", str(args.threads)]
        lines = (
            subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()
        )
        forwards[name] = flops = json.loads(lines[-1])
        print(
            f"transformer forward alone ({name}): {flops['forward_cells_per_s']:.0f} cells/s, "
            f"{flops['mean_tokens']:.0f} tokens per cell, {flops['forward_gflops']:.1f} GFLOP/s = "
            f"{flops['forward_gflops'] / flops['matmul_peak_gflops']:.0%} of the measured float32 matmul peak "
            f"({flops['matmul_peak_gflops']:.1f} GFLOP/s, 2048 x 2048, {args.threads} threads; target >= 30%)"
        )
    flops = forwards["defaults"]
    ratio = flops["forward_cells_per_s"] / forwards["previous defaults"]["forward_cells_per_s"]
    print(
        f"forward cells/s, defaults / previous defaults ({', '.join(f'{k} {v}' for k, v in PREVIOUS_DEFAULTS.items())}): "
        f"{ratio:.2f}x (issue 11: prediction not slower than before by more than 2x, i.e. >= 0.50x)"
    )
    boot = bootstrap_check()
    print(
        f"evaluate's bootstrap on {boot['cells']:,} predictions (16 classes, 1,000 resamples): CI "
        f"{boot['ci_seconds']:.1f} s, paired comparison of two runs {boot['paired_seconds']:.1f} s; resampling "
        f"cells one by one (the old way, timed on 50 resamples, scaled) {boot['reference']:.0f} s: "
        f"{boot['reference'] / boot['ci_seconds']:.0f}x faster"
    )
    with open(args.work / "results.json", "w") as handle:
        json.dump(
            {"rows": rows, "flops": forwards, "bootstrap": boot, "threads": args.threads}, handle, indent=1
        )


if __name__ == "__main__":
    main()
