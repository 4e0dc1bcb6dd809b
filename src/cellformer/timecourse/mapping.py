"""Previous-time-point profiles from the data itself: a kNN ancestor mapping (as in TOME).

Time-course atlases link consecutive time points by embedding cells of both into one space and
taking each cell's nearest neighbours at the earlier time point as its likely ancestors
(Qiu et al. 2022, TOME). This module does that for the rank tokenizer's ``<SEP>`` block:

1. **Profiles.** Every *training* cell's profile ``x / total`` (float32, all genes) is stored as a
   CSR matrix ``P``; ``log1p(P * target_sum)`` is its log-normalized form.
2. **Shared space.** Highly variable genes (``n_hvg`` of them by :mod:`cellformer.tokenize.hvg`:
   scanpy's seurat flavor on the training profiles, among genes with some spread and a mean
   log-normalized value of at least ``MIN_LOG_MEAN``; all of those when there are fewer)
   are standardized with training means / standard deviations and projected onto the top
   ``n_components`` principal components of the training cells (exact PCA from the streamed
   ``n_hvg x n_hvg`` correlation matrix; no clipping).
3. **Ancestors.** A cell at time ``t`` takes the ``k`` nearest training cells (Euclidean distance in
   that space, ties broken by training index) at the *preceding training time point*: the largest
   time among training cells that is strictly earlier than ``t``. Its previous profile is the mean
   of their ``x / total`` profiles, scaled to ``target_sum``.
4. **Earliest time point.** Cells with no earlier training time point get an all-zero previous
   row; the rank tokenizer then yields ``<CLS> + current block + <SEP>``.

No leakage: only training cells are ever neighbours (and only they fit the genes and PCA), so a
validation / test / new cell's previous profile is built from training cells alone, and changing
any non-training cell changes no other cell's profile. Each cell's profile depends only on that
cell and the fitted state, whatever the chunking.

Time may be numeric or an *ordered* categorical; see :func:`time_codes`.

Saved state (``save`` / ``load``, no pickles: JSON, ``.npy`` and raw little-endian ``.bin``)::

    mapping.json           parameters, time kind and order, training cells per time point, sizes
    profiles_data.bin      float32 CSR data of P (n_train x n_genes), streamed during ``fit``;
    profiles_indices.bin   int32 gene columns; both memory-mapped on load (rows read on demand)
    profiles_indptr.npy    int64 row pointers
    hvg.npy                int64 gene columns used for the PCA
    center.npy, scale.npy  float64 per-HVG training mean / standard deviation
    components.npy         float64 (n_hvg, n_components)
    embedding.npy          float32 (n_train, n_components) training cells in the shared space
    ref_time.npy           int64 (n_train,) time-point index of each training cell
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellformer.errors import InputError
from cellformer.tokenize.hvg import highly_variable_genes, mean_var

log = logging.getLogger(__name__)

FORMAT = "cellformer-ancestor-mapping"
FORMAT_VERSION = 1
_CANDIDATE_MARGIN = 8  # extra GEMM candidates re-ranked with exact distances
_KNN_BLOCK = 1 << 23  # query x reference distances held at once (64 MiB of float64)
# genes with a lower mean log-normalized value are never used (e.g. one cell with a value of 1e-40 in
# FPKM data): their tiny spread would dominate after standardization
MIN_LOG_MEAN = 1e-3


# --------------------------------------------------------------------------------------------- time


def time_codes(
    values: Any, column: str = "time", order: dict[str, Any] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Map a time column to float positions on one axis, plus the order needed to map new cells.

    Parameters
    ----------
    values
        The column (pandas Series / array). Numeric values are used as they are; an *ordered*
        categorical uses its category order; strings or unordered categories that all parse as
        numbers ("0", "24") are used as numbers. Anything else cannot be ordered.
    column
        Column name for error messages.
    order
        A saved order (from an earlier call); new values are mapped onto it.

    Returns
    -------
    (positions, order): float64 positions (category codes or numbers) and
    ``{"kind": "numeric"}`` or ``{"kind": "ordered", "categories": [...]}``.
    """
    series = pd.Series(values)
    n_missing = int(series.isna().sum())
    if n_missing:
        raise InputError(
            f"time column {column!r} has {n_missing} missing value(s); fill them or drop those cells"
        )
    if order is not None and order["kind"] == "ordered":
        categories = [str(c) for c in order["categories"]]
        lookup = {c: i for i, c in enumerate(categories)}
        as_text = series.astype(str)
        unknown = sorted(set(as_text) - set(lookup))
        if unknown:
            raise InputError(
                f"time column {column!r} has value(s) {', '.join(unknown[:5])} that are not among the "
                f"time points the mapping was fitted on ({', '.join(categories)})"
            )
        return as_text.map(lookup).to_numpy(dtype=np.float64), order
    if isinstance(series.dtype, pd.CategoricalDtype):
        if series.cat.ordered and order is None:
            categories = [str(c) for c in series.cat.categories]
            return series.cat.codes.to_numpy(dtype=np.float64), {"kind": "ordered", "categories": categories}
        series = series.astype(object)
    if series.dtype == bool:
        raise InputError(f"time column {column!r} is boolean; use numbers or an ordered categorical")
    if not pd.api.types.is_numeric_dtype(series.dtype):
        parsed = pd.to_numeric(series, errors="coerce")
        if parsed.isna().any():
            examples = ", ".join(map(repr, pd.unique(series[parsed.isna()])[:3]))
            raise InputError(
                f"time column {column!r} cannot be ordered (values such as {examples} are neither "
                "numbers nor an ordered categorical); make it numeric, or set "
                "adata.obs[col] = pd.Categorical(values, categories=[earliest, ..., latest], ordered=True)"
            )
        series = parsed
    positions = series.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        raise InputError(f"time column {column!r} has non-finite values (inf); fix them")
    return positions, {"kind": "numeric"}


def check_time_points(positions: np.ndarray, column: str = "time") -> np.ndarray:
    """The sorted distinct time points; refuses a column with fewer than two."""
    points = np.unique(positions)
    if len(points) < 2:
        raise InputError(
            f"time column {column!r} has only {len(points)} time point(s) among the training cells; "
            "a previous-time-point profile needs at least two"
        )
    return points


# ------------------------------------------------------------------------------------- profiles


def normalize_rows(X: sp.spmatrix | np.ndarray, normalize_total: bool = True) -> sp.csr_matrix:
    """``x / total`` per cell (``x`` as given without ``normalize_total``) as float32 CSR.

    All-zero rows stay zero; duplicate entries are summed and explicit zeros dropped.
    """
    X = sp.csr_matrix(X, dtype=np.float64) if not sp.issparse(X) else X.tocsr().astype(np.float64)
    X.sum_duplicates()  # also sorts the indices
    X.eliminate_zeros()
    if X.nnz and X.data.min() < 0:
        raise InputError("expression values must be non-negative (counts or de-logged normalized values)")
    if normalize_total:
        totals = np.add.reduceat(X.data, X.indptr[:-1]) if X.nnz else np.zeros(X.shape[0])
        totals = np.repeat(np.where(np.diff(X.indptr) > 0, totals, 1.0), np.diff(X.indptr))
        X.data /= totals
    return sp.csr_matrix(X, dtype=np.float32)


def _log_columns(P: sp.csr_matrix, columns: np.ndarray | None, target_sum: float) -> sp.csr_matrix:
    """``log1p(P[:, columns] * target_sum)`` as float64 CSR (all columns when ``columns`` is None)."""
    sub = (P if columns is None else P[:, columns]).astype(np.float64)
    sub.data = np.log1p(sub.data * target_sum)
    return sub


# -------------------------------------------------------------------------------------- mapping


class AncestorMapping:
    """Fitted kNN ancestor mapping; build it with :meth:`fit`, use :meth:`transform`.

    Parameters
    ----------
    k
        Ancestors averaged per cell (fewer when the preceding time point has fewer training cells).
    n_components
        Principal components of the shared space.
    n_hvg
        Highly variable genes used for the PCA; ``None`` uses every expressed gene (memory grows as
        the square of the gene count).
    target_sum
        Library size of the log-normalization, and the total of each returned previous profile.
    normalize_total
        ``False`` for input that is already normalized (FPKM, TPM, de-logged CP10k): profiles are the
        values as given, ``log1p(x)`` is the log-normalized form, and previous profiles are plain
        neighbour means (same scale as the input).
    chunk_size
        Cells per step when streaming over the training profiles.
    """

    def __init__(
        self,
        *,
        k: int = 10,
        n_components: int = 30,
        n_hvg: int | None = 2000,
        target_sum: float = 1e4,
        normalize_total: bool = True,
        chunk_size: int = 2048,
    ) -> None:
        if k <= 0 or n_components <= 0 or (n_hvg is not None and n_hvg <= 0):
            raise ValueError("k, n_components and n_hvg must be positive")
        self.k = int(k)
        self.n_components = int(n_components)
        self.n_hvg = None if n_hvg is None else int(n_hvg)
        self.target_sum = float(target_sum)
        self.normalize_total = bool(normalize_total)
        self.chunk_size = int(chunk_size)
        self.time_order: dict[str, Any] | None = None
        self.time_points: np.ndarray | None = None  # float64 sorted training time positions
        self.profiles: sp.csr_matrix | None = None
        self.hvg = self.center = self.scale = self.components = None
        self.embedding: np.ndarray | None = None
        self.ref_time: np.ndarray | None = None

    @property
    def _factor(self) -> float:
        """Multiplier of stored profiles before ``log1p`` and in the returned previous profiles."""
        return self.target_sum if self.normalize_total else 1.0

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        chunks: Iterable[sp.spmatrix] | Callable[[], Iterable[sp.spmatrix]],
        times: Any,
        *,
        time_key: str = "time",
        directory: str | Path | None = None,
    ) -> AncestorMapping:
        """Fit on the training cells only.

        Parameters
        ----------
        chunks
            The training cells' matrices (counts or de-logged values, columns aligned to the
            vocabulary), in order, read once.
        times
            Their time values, one per training cell in the same order.
        time_key
            The time column's name, for error messages.
        directory
            Where to stream the training profiles (then memory-mapped, so memory does not grow with
            the number of cells); call :meth:`save` with the same directory afterwards. ``None`` keeps
            them in memory.
        """
        positions, self.time_order = time_codes(times, time_key)
        self.time_points = check_time_points(positions, time_key)
        writer = _ProfileWriter(None if directory is None else Path(directory))
        for X in chunks() if callable(chunks) else chunks:
            writer.append(normalize_rows(X, self.normalize_total))
        P = writer.close()
        if P.shape[0] != len(positions):
            raise InputError(
                f"{P.shape[0]} training cells but {len(positions)} values in time column {time_key!r}"
            )
        self.profiles = P
        self._profile_dir = writer.directory
        self.ref_time = np.searchsorted(self.time_points, positions).astype(np.int64)
        self._fit_space()
        return self

    def _row_chunks(self, n: int) -> Iterable[slice]:
        for start in range(0, n, self.chunk_size):
            yield slice(start, min(start + self.chunk_size, n))

    def _fit_space(self) -> None:
        P = self.profiles
        n_cells, n_genes = P.shape
        total = np.zeros(n_genes)
        total_sq = np.zeros(n_genes)
        for rows in self._row_chunks(n_cells):
            L = _log_columns(P[rows], None, self._factor)
            total += np.asarray(L.sum(axis=0)).ravel()
            total_sq += np.asarray(L.multiply(L).sum(axis=0)).ravel()
        mean, var = mean_var(n_cells, total, total_sq)
        var = np.maximum(var, 0.0)
        self.hvg = self._select_hvg(mean, var)
        if len(self.hvg) == 0:
            raise InputError(
                "the training cells express no genes; cannot build a previous-time-point mapping"
            )
        self.center = mean[self.hvg]
        self.scale = np.maximum(np.sqrt(var[self.hvg]), 1e-6)
        gram = np.zeros((len(self.hvg), len(self.hvg)))
        for rows in self._row_chunks(n_cells):
            L = _log_columns(P[rows], self.hvg, self._factor).toarray()  # (chunk, H), dense for BLAS
            gram += L.T @ L
        cov = (gram - n_cells * np.outer(self.center, self.center)) / max(n_cells - 1, 1)
        corr = cov / np.outer(self.scale, self.scale)
        n_comp = max(1, min(self.n_components, len(self.hvg), max(n_cells - 1, 1)))
        eigval, eigvec = _top_eigenvectors(corr, n_comp)
        components = eigvec[:, ::-1]
        # deterministic sign: largest-magnitude loading positive
        signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(n_comp)])
        self.components = components * np.where(signs == 0, 1.0, signs)
        self.embedding = (
            np.concatenate([self._embed_profiles(P[rows]) for rows in self._row_chunks(n_cells)])
            if n_cells
            else np.zeros((0, n_comp), np.float32)
        )
        log.info(
            "ancestor mapping: %d training cells, %d time points, %d genes in PCA, %d components "
            "(%.0f%% of variance)",
            n_cells,
            len(self.time_points),
            len(self.hvg),
            n_comp,
            100 * eigval.sum() / max(np.trace(corr), 1e-12),
        )

    def _select_hvg(self, log_mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
        """The PCA's genes: the ``n_hvg`` most variable training genes by the one HVG selection
        (scanpy's ``seurat`` flavor on the linear-scale profiles ``P * factor``, whose ``log1p`` is the
        log-normalized form), among the genes with some spread and a mean log value of at least
        ``MIN_LOG_MEAN``; all of those when there are no more (or ``n_hvg`` is None)."""
        P = self.profiles
        usable = (log_mean >= MIN_LOG_MEAN) & (log_var > 0)
        if self.n_hvg is None:
            return np.flatnonzero(usable)
        linear = (P[rows].astype(np.float64) * self._factor for rows in self._row_chunks(P.shape[0]))
        return highly_variable_genes(linear, P.shape[1], self.n_hvg, "seurat", among=usable)

    def _embed_profiles(self, P: sp.csr_matrix) -> np.ndarray:
        """Shared-space coordinates of ``x / total`` profiles, float32; row-wise exact (chunk-free)."""
        weights = self.components / self.scale[:, None]  # (H, C)
        offset = self.center @ weights  # (C,)
        L = _log_columns(P, self.hvg, self._factor)
        return (L @ weights - offset).astype(np.float32)  # sparse @ dense: computed row by row

    # ------------------------------------------------------------ transform

    def _require_fitted(self) -> None:
        if self.embedding is None:
            raise RuntimeError("AncestorMapping used before fit/load")

    def predecessors(self, positions: np.ndarray) -> np.ndarray:
        """Index into ``time_points`` of each cell's preceding training time point (-1: none)."""
        self._require_fitted()
        return np.searchsorted(self.time_points, positions, side="left") - 1

    def neighbours(
        self, X: sp.spmatrix, times: Any, *, time_key: str = "time"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ancestor rows (indices into the training profiles, ``-1`` padded) and their count per cell."""
        self._require_fitted()
        positions, _ = time_codes(times, time_key, order=self.time_order)
        P = normalize_rows(X, self.normalize_total)
        if P.shape[0] != len(positions):
            raise InputError(f"{P.shape[0]} cells but {len(positions)} values in time column {time_key!r}")
        if P.shape[1] != self.profiles.shape[1]:
            raise InputError(
                f"matrix has {P.shape[1]} genes, the ancestor mapping was fitted on {self.profiles.shape[1]}"
            )
        previous = self.predecessors(positions)
        out = np.full((P.shape[0], self.k), -1, dtype=np.int64)
        counts = np.zeros(P.shape[0], dtype=np.int64)
        for tp in np.unique(previous[previous >= 0]):
            cells = np.flatnonzero(previous == tp)
            refs = np.flatnonzero(self.ref_time == tp)
            k = min(self.k, len(refs))
            R = np.asarray(self.embedding[refs], dtype=np.float64)
            step = max(1, min(self.chunk_size, _KNN_BLOCK // max(len(refs), 1)))
            for rows in (slice(s, min(s + step, len(cells))) for s in range(0, len(cells), step)):
                Q = self._embed_profiles(P[cells[rows]]).astype(np.float64)
                out[cells[rows], :k] = refs[_knn(Q, R, k)]
                counts[cells[rows]] = k
        return out, counts

    def transform(self, X: sp.spmatrix, times: Any, *, time_key: str = "time") -> sp.csr_matrix:
        """Previous-time-point profiles (float32 CSR, rows sum to ``target_sum`` or are all zero)."""
        index, counts = self.neighbours(X, times, time_key=time_key)
        n = index.shape[0]
        rows = np.repeat(np.arange(n), counts)
        cols = index[index >= 0]
        if len(cols) == 0:
            return sp.csr_matrix((n, self.profiles.shape[1]), dtype=np.float32)
        used, local = np.unique(cols, return_inverse=True)
        weights = np.repeat(self._factor / np.maximum(counts, 1), counts)
        W = sp.csr_matrix((weights, (rows, local)), shape=(n, len(used)))
        W.sort_indices()
        out = sp.csr_matrix(W @ self.profiles[used].astype(np.float64), dtype=np.float32)
        out.sort_indices()
        return out

    # ------------------------------------------------------------ save / load

    def save(self, directory: str | Path) -> None:
        """Write the fitted state into ``directory`` (npy, raw bin + JSON, no pickles)."""
        self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        P = self.profiles
        if getattr(self, "_profile_dir", None) is None or self._profile_dir.resolve() != directory.resolve():
            writer = _ProfileWriter(directory)
            for rows in self._row_chunks(P.shape[0]):
                writer.append(P[rows])
            writer.close()
        arrays = {
            "hvg": self.hvg.astype(np.int64),
            "center": self.center,
            "scale": self.scale,
            "components": self.components,
            "embedding": self.embedding.astype(np.float32),
            "ref_time": self.ref_time,
        }
        for name, array in arrays.items():
            np.save(directory / f"{name}.npy", np.ascontiguousarray(array))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "k": self.k,
            "n_components": self.n_components,
            "n_hvg": self.n_hvg,
            "target_sum": self.target_sum,
            "normalize_total": self.normalize_total,
            "time_order": self.time_order,
            "time_points": self.time_points.tolist(),
            "n_reference": int(P.shape[0]),
            "n_genes": int(P.shape[1]),
            "n_nonzero": int(P.nnz),
            "index_dtype": str(P.indices.dtype),
            "reference_per_time_point": np.bincount(self.ref_time, minlength=len(self.time_points)).tolist(),
        }
        (directory / "mapping.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> AncestorMapping:
        """Rebuild from :meth:`save`'s files; the profile matrix is memory-mapped, not read."""
        from cellformer.errors import RunDirError

        directory = Path(directory)
        path = directory / "mapping.json"
        if not path.exists():
            raise RunDirError(
                f"{directory} has no ancestor mapping ({path.name} is missing); prepare again with --time-key"
            )
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise RunDirError(f"{path} is not a version-{FORMAT_VERSION} ancestor mapping; prepare again")
        self = cls(
            k=meta["k"],
            n_components=meta["n_components"],
            n_hvg=meta["n_hvg"],
            target_sum=meta["target_sum"],
            normalize_total=meta["normalize_total"],
        )
        self.time_order = meta["time_order"]
        self.time_points = np.asarray(meta["time_points"], dtype=np.float64)

        def arr(name: str, mmap: bool = False) -> np.ndarray:
            return np.load(directory / f"{name}.npy", mmap_mode="r" if mmap else None)

        self.profiles = _open_profiles(directory, meta["n_reference"], meta["n_genes"], meta["n_nonzero"])
        self._profile_dir = directory
        self.hvg, self.center, self.scale = arr("hvg"), arr("center"), arr("scale")
        self.components, self.embedding, self.ref_time = arr("components"), arr("embedding"), arr("ref_time")
        return self


def _top_eigenvectors(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenpairs of a symmetric matrix, ascending: Lanczos (ARPACK, fixed start
    vector, so deterministic) when ``k`` is small against the size, else a dense solver."""
    from scipy.linalg import eigh
    from scipy.sparse.linalg import eigsh

    h = matrix.shape[0]
    if h > 200 and 3 * k < h:
        start = np.ones(h) / np.sqrt(h)
        eigval, eigvec = eigsh(matrix, k=k, which="LA", v0=start, tol=0)
        order = np.argsort(eigval)
        return eigval[order], eigvec[:, order]
    return eigh(matrix, subset_by_index=[h - k, h - 1])


class _ProfileWriter:
    """Appends CSR chunks: raw ``profiles_data.bin`` (float32) and ``profiles_indices.bin`` (int32) in
    ``directory`` (or lists in memory when ``directory`` is None); ``close`` returns the whole matrix."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.n_genes: int | None = None
        self.lengths: list[np.ndarray] = []
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._data = open(directory / "profiles_data.bin", "wb")
            self._indices = open(directory / "profiles_indices.bin", "wb")

    def append(self, P: sp.csr_matrix) -> None:
        if self.n_genes is not None and P.shape[1] != self.n_genes:
            raise InputError(f"training chunks have {P.shape[1]} and {self.n_genes} genes; align them first")
        self.n_genes = P.shape[1]
        P.sort_indices()
        data, indices = P.data.astype(np.float32), P.indices.astype(np.int32)
        self.lengths.append(np.diff(P.indptr).astype(np.int64))
        if self.directory is None:
            self.parts.append((data, indices))
        else:
            self._data.write(data.tobytes())
            self._indices.write(indices.tobytes())

    def close(self) -> sp.csr_matrix:
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        indptr = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        n_genes = self.n_genes or 0
        if self.directory is None:
            data = np.concatenate([p[0] for p in self.parts]) if self.parts else np.zeros(0, np.float32)
            indices = np.concatenate([p[1] for p in self.parts]) if self.parts else np.zeros(0, np.int32)
            return sp.csr_matrix((data, indices, indptr), shape=(len(lengths), n_genes))
        self._data.close()
        self._indices.close()
        np.save(self.directory / "profiles_indptr.npy", indptr)
        return _open_profiles(self.directory, len(lengths), n_genes, int(indptr[-1]))


def _open_profiles(directory: Path, n_rows: int, n_genes: int, nnz: int) -> sp.csr_matrix:
    """The saved profile matrix over memory-mapped files (rows are read only when indexed)."""
    indptr = np.load(directory / "profiles_indptr.npy")
    if nnz == 0:
        return sp.csr_matrix((n_rows, n_genes), dtype=np.float32)
    data = np.memmap(directory / "profiles_data.bin", dtype=np.float32, mode="r", shape=(nnz,))
    indices = np.memmap(directory / "profiles_indices.bin", dtype=np.int32, mode="r", shape=(nnz,))
    if nnz < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)  # same dtype as indices: scipy keeps the memmaps
    matrix = sp.csr_matrix((n_rows, n_genes), dtype=np.float32)
    matrix.data, matrix.indices, matrix.indptr = data, indices, indptr  # no validation pass, no copy
    matrix.has_sorted_indices = True
    return matrix


def _knn(Q: np.ndarray, R: np.ndarray, k: int) -> np.ndarray:
    """Indices into ``R`` of each query's ``k`` nearest rows, nearest first, ties by index.

    Candidates come from one matrix product; they are re-ranked with exact row-wise distances so the
    answer for a query does not depend on which other queries share its chunk.
    """
    n_candidates = min(len(R), k + _CANDIDATE_MARGIN)
    r_sq = np.einsum("ij,ij->i", R, R)
    approx = r_sq[None, :] - 2.0 * (Q @ R.T)  # (q, r); |q|^2 is constant per row
    if n_candidates < len(R):
        candidates = np.argpartition(approx, n_candidates - 1, axis=1)[:, :n_candidates]
    else:
        candidates = np.broadcast_to(np.arange(len(R)), (len(Q), len(R)))
    exact = ((Q[:, None, :] - R[candidates]) ** 2).sum(axis=2)  # (q, c)
    order = _rowwise_lexsort(exact, candidates)[:, :k]
    return np.take_along_axis(candidates, order, axis=1)


def _rowwise_lexsort(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Per-row order by ``primary`` then ``secondary`` (both 2-D, same shape)."""
    order = np.argsort(secondary, axis=1, kind="stable")
    by_primary = np.argsort(np.take_along_axis(primary, order, axis=1), axis=1, kind="stable")
    return np.take_along_axis(order, by_primary, axis=1)
