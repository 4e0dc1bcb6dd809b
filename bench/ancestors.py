# ruff: noqa: E402
"""Time and peak memory of the kNN ancestor mapping (``cellformer.timecourse.mapping``) on 100k cells.

What it measures
----------------
1. A synthetic branching time course (``cellformer.datasets.synthetic``; default 100,000 cells x 2,000
   genes, 6 time points, raw counts) is generated and split 70 % train / 30 % other (not timed).
2. **Mapping, full size:** ``AncestorMapping.fit`` on the training cells (profiles streamed to a temporary
   directory, HVGs, streamed correlation-matrix PCA, training embeddings) and ``transform`` of *all*
   cells in chunks (embedding, kNN against the preceding time point, neighbour-averaged profiles).
   Wall time of each, and the peak *anonymous* resident memory (Linux RssAnon: heap and arrays, not
   the page cache of memory-mapped files) above the level before the step, sampled every 10 ms by a
   thread; the input matrix is already in memory and not counted.
3. **Reference, subset:** on a random subset (default 20,000 cells, same split rule) a plain dense
   pipeline: dense log1p(CP10k) matrix of the same HVGs, standardized, scikit-learn ``PCA`` (full SVD),
   then brute-force dense distances to every training cell of the preceding time point
   (``sklearn.metrics.pairwise_distances``) and ``argsort``. Our mapping runs on the same subset, and we
   print the time / memory ratios and the overlap of the two neighbour sets (mean Jaccard index): the
   same genes and the same number of components are used, so the sets should agree up to ties and
   the sign/rotation-free PCA details.
4. **Ancestor quality** on the full data: fraction of non-earliest cells whose k ancestors' majority
   cell type equals the cell type of the simulated true parent.

Usage: ``python bench/ancestors.py [--cells 100000] [--genes 2000] [--subset 20000]`` (< 15 min on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import scipy.sparse as sp

from cellformer.datasets.synthetic import synthetic_timecourse
from cellformer.timecourse.mapping import AncestorMapping, _log_columns, normalize_rows


def anonymous_rss() -> int:
    """Resident anonymous memory (heap, numpy arrays) in bytes: RssAnon on Linux, else RSS.

    Memory-mapped files (the saved profiles) are page cache the kernel can drop, so they are left out.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return psutil.Process(os.getpid()).memory_info().rss


class PeakMemory:
    """Peak anonymous RSS above the starting level while the block runs (10 ms sampling)."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = anonymous_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, anonymous_rss())
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anonymous_rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def run_mapping(X, times, train, directory, k, n_components, n_hvg, chunk_size=4096):
    mapping = AncestorMapping(k=k, n_components=n_components, n_hvg=n_hvg, chunk_size=chunk_size)
    train_rows = np.flatnonzero(train)
    with PeakMemory() as fit:
        chunks = (X[train_rows[i : i + chunk_size]] for i in range(0, len(train_rows), chunk_size))
        mapping.fit(chunks, times[train_rows], directory=directory)
        mapping.save(directory)
    index = np.full((X.shape[0], k), -1, dtype=np.int64)
    with PeakMemory() as transform:
        nnz = 0
        for i in range(0, X.shape[0], chunk_size):
            rows = slice(i, i + chunk_size)
            nnz += mapping.transform(X[rows], times[rows]).nnz
    for i in range(0, X.shape[0], chunk_size):  # not timed: the neighbours, for the comparisons
        rows = slice(i, i + chunk_size)
        index[rows] = mapping.neighbours(X[rows], times[rows])[0]
    return mapping, index, fit, transform, nnz


def dense_reference(X, times, train, hvg, k, n_components):
    """Plain dense pipeline on the same genes: returns neighbour indices into the training rows."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import pairwise_distances

    with PeakMemory() as usage:
        L = _log_columns(normalize_rows(X), hvg, 1e4).toarray()  # (n, H) dense
        train_rows = np.flatnonzero(train)
        mean, sd = L[train_rows].mean(axis=0), L[train_rows].std(axis=0, ddof=1)
        sd[sd == 0] = 1
        Z = (L - mean) / sd
        pca = PCA(n_components=n_components, svd_solver="full").fit(Z[train_rows])
        E = pca.transform(Z)
        points = np.unique(times[train_rows])
        index = np.full((X.shape[0], k), -1, dtype=np.int64)
        previous = np.searchsorted(points, times, side="left") - 1  # preceding training time point
        for p in range(len(points)):
            refs = np.flatnonzero(times[train_rows] == points[p])
            cells = np.flatnonzero(previous == p)
            if len(cells) == 0:
                continue
            D = pairwise_distances(E[cells], E[train_rows[refs]])  # full dense (cells x refs)
            index[cells] = refs[np.argsort(D, axis=1, kind="stable")[:, :k]]
    return index, usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--times", type=int, default=6)
    parser.add_argument("--subset", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--components", type=int, default=30)
    parser.add_argument("--hvg", type=int, default=1000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    adata = synthetic_timecourse(
        n_times=args.times, cells_per_time=args.cells // args.times, n_genes=args.genes, seed=0
    )
    X = sp.csr_matrix(adata.X, dtype=np.float32)
    times = adata.obs["time"].to_numpy()
    cell_type = adata.obs["cell_type"].astype(str).to_numpy()
    parent = adata.obs["parent"].to_numpy()
    del adata.layers["X_previous"]
    train = np.random.default_rng(1).random(X.shape[0]) < 0.7
    print(
        f"data: {X.shape[0]} cells x {X.shape[1]} genes, {X.nnz / X.shape[0]:.0f} nonzero per cell, "
        f"X = {(X.data.nbytes + X.indices.nbytes) / 2**20:.0f} MiB, {train.sum()} training cells, "
        f"{args.times} time points (generated in {time.perf_counter() - t0:.1f} s)"
    )
    print(
        f"mapping: k={args.k}, {args.components} components, {args.hvg} HVGs; machine: {os.cpu_count()} CPUs"
    )

    with tempfile.TemporaryDirectory() as tmp:
        mapping, index, fit, transform, nnz = run_mapping(
            X, times, train, Path(tmp) / "full", args.k, args.components, args.hvg
        )
        size = sum(p.stat().st_size for p in (Path(tmp) / "full").iterdir()) / 2**20
        print(
            f"\n[full {X.shape[0]} cells] fit: {fit.seconds:.1f} s, peak +{fit.mib:.0f} MiB; "
            f"transform (all cells): {transform.seconds:.1f} s, peak +{transform.mib:.0f} MiB; "
            f"saved mapping {size:.0f} MiB; previous profiles: {nnz / X.shape[0]:.0f} nonzero per cell"
        )

        # ancestor quality against the simulated lineage
        train_types = cell_type[train]
        name_to_type = dict(zip(adata.obs_names, cell_type, strict=True))
        has_parent = times > times.min()
        hits = []
        for i in np.flatnonzero(has_parent):
            refs = index[i][index[i] >= 0]
            values, counts = np.unique(train_types[refs], return_counts=True)
            hits.append(values[counts.argmax()] == name_to_type[parent[i]])
        print(
            f"ancestor quality: majority type of the k ancestors = true parent's type for "
            f"{np.mean(hits):.1%} of {has_parent.sum()} non-earliest cells"
        )

        # reference comparison on a subset
        sub = np.sort(
            np.random.default_rng(2).choice(X.shape[0], size=min(args.subset, X.shape[0]), replace=False)
        )
        Xs, ts, trs = X[sub], times[sub], train[sub]
        mapping_s, index_s, fit_s, transform_s, _ = run_mapping(
            Xs, ts, trs, Path(tmp) / "subset", args.k, args.components, args.hvg
        )
        ref_index, ref_usage = dense_reference(Xs, ts, trs, mapping_s.hvg, args.k, args.components)
        ours_s = fit_s.seconds + transform_s.seconds
        ours_mib = max(fit_s.mib, transform_s.mib)
        jaccard = []
        for a, b in zip(index_s, ref_index, strict=True):
            a, b = set(a[a >= 0]), set(b[b >= 0])
            if a or b:
                jaccard.append(len(a & b) / len(a | b))
        print(
            f"\n[subset {len(sub)} cells] ours (fit + transform): {ours_s:.1f} s, peak +{ours_mib:.0f} MiB; "
            f"dense reference (PCA + brute-force distances): {ref_usage.seconds:.1f} s, peak +{ref_usage.mib:.0f} MiB"
        )
        print(
            f"ratios ours / reference: time {ours_s / ref_usage.seconds:.2f}, "
            f"peak memory {ours_mib / max(ref_usage.mib, 1):.2f}; neighbour sets agree: mean Jaccard "
            f"{np.mean(jaccard):.3f}, identical sets {np.mean(np.array(jaccard) == 1):.1%}"
        )
    print(f"\ntotal bench time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
