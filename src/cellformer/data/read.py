"""Backed, chunked reading of an ``.h5ad`` file: labels, gene names and rows of a sparse matrix.

The file is opened read-only with h5py and never loaded whole: :meth:`H5adReader.read_rows` returns a
contiguous block of rows as CSR, so memory follows the chunk size, not the number of cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellformer.errors import InputError

RAW_LAYER = "raw.X"  # ``--layer raw.X`` reads ``adata.raw.X`` with ``adata.raw.var`` gene names


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "SO":
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)
    return values


def supported_dtype(values: np.ndarray) -> np.ndarray:
    """Values scipy.sparse can hold: float16 (valid in h5ad, unsupported by scipy) becomes float32."""
    return values.astype(np.float32) if values.dtype == np.float16 else values


def check_column_indices(indices: np.ndarray, n_vars: int, where: str, start: int, stop: int) -> None:
    """Refuse CSR column indices outside ``[0, n_vars)``: the file is damaged (not a valid matrix)."""
    if len(indices) and (int(indices.max()) >= n_vars or int(indices.min()) < 0):
        bad = int(indices.max()) if int(indices.max()) >= n_vars else int(indices.min())
        raise InputError(
            f"{where} is damaged: a stored sparse index ({bad}, among cells {start}-{stop - 1}) is outside its "
            f"{n_vars} rows/genes, so values cannot be assigned to genes; get the file again from its source "
            "(re-download or re-export it)"
        )


class _LegacyTable:
    """An obs / var table of an anndata < 0.7 file (a structured array), read whole with anndata's own
    legacy reader; it answers the few things :class:`H5adReader` asks of the h5py group of newer files."""

    def __init__(self, node: h5py.Dataset) -> None:
        import warnings

        from anndata._io.h5ad import read_dataframe_legacy

        with warnings.catch_warnings():  # anndata's OldFormatWarning: the file is read correctly
            warnings.simplefilter("ignore")
            self.frame = read_dataframe_legacy(node)
        self.name = node.name
        self.attrs = {"_index": "_index", "column-order": [str(c) for c in self.frame.columns]}
        self._uns = node.file.get("uns")  # categorical columns: codes here, names in uns/<col>_categories

    def keys(self) -> list[str]:
        return ["_index", *self.attrs["column-order"]]

    def column(self, key: str) -> np.ndarray | pd.Categorical:
        if key == "_index":
            return _decode(self.frame.index.to_numpy())
        values = self.frame[key]
        if isinstance(values.dtype, pd.CategoricalDtype):
            return pd.Categorical(values)
        names = self._uns.get(f"{key}_categories") if isinstance(self._uns, h5py.Group) else None
        if isinstance(names, h5py.Dataset) and values.dtype.kind in "iu":  # as anndata's _clean_uns
            categories = _decode(np.atleast_1d(names[()]))
            codes = values.to_numpy()
            if len(codes) == 0 or codes.max() < len(categories):
                return pd.Categorical.from_codes(codes, categories=pd.Index(categories))
        return _decode(values.to_numpy())

    def __getitem__(self, key: str) -> np.ndarray | pd.Categorical:
        return self.column(key)


class H5adReader:
    """Read-only, chunked access to one ``.h5ad`` file.

    Parameters
    ----------
    path
        The ``.h5ad`` file (opened with h5py in mode ``"r"``; never modified).
    layer
        ``None`` for ``X``, a name in ``layers``, or ``"raw.X"`` for ``adata.raw.X``.
    gene_key
        A ``var`` column whose values name the genes instead of ``var_names``.
    layer_origin
        Where ``layer`` came from, for the error when the file lacks it (prediction: ``"given with
        --layer"`` or ``"the one the model was trained on"``); ``None``: the user gave it.
    """

    def __init__(
        self,
        path: str | Path,
        layer: str | None = None,
        gene_key: str | None = None,
        layer_origin: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.layer_origin = layer_origin
        self.layer = layer
        self.gene_key = gene_key
        if self.path.is_dir():
            raise InputError(
                f"input {self.path} is a directory; give an .h5ad file (zarr stores are not supported)"
            )
        if not self.path.is_file():
            raise InputError(f"input file {self.path} does not exist")
        if self.path.stat().st_size == 0:
            raise InputError(f"input file {self.path} is empty (0 bytes); it is not an .h5ad file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(
                f"cannot read {self.path} as an .h5ad (HDF5) file: it is corrupt, truncated or another "
                f"format ({exc}); re-save it with anndata's `adata.write_h5ad`"
            ) from None
        try:
            self._open_matrix()
        except Exception:
            self._file.close()
            raise

    # -- structure -----------------------------------------------------------------------------
    def _group(self, name: str) -> h5py.Group | _LegacyTable:
        node = self._file.get(name)
        if isinstance(node, h5py.Dataset) and node.dtype.names:  # anndata < 0.7: a structured array
            return _LegacyTable(node)
        if not isinstance(node, h5py.Group) or "_index" not in node.attrs:
            raise InputError(
                f"{self.path} has no readable '{name}' table in a layout cellformer reads; if anndata reads "
                'it, convert it with: python -c "import anndata; '
                f"anndata.read_h5ad('{self.path}').write_h5ad('converted.h5ad')\" and prepare converted.h5ad"
            )
        return node

    def _open_matrix(self) -> None:
        self._obs = obs = self._group("obs")
        var_name = "raw/var" if self.layer == RAW_LAYER else "var"
        if self.layer is None:
            node = self._file.get("X")
            if node is None:
                raise InputError(
                    f"{self.path} has no X matrix; choose a layer with --layer ({self._layers_text()})"
                )
        elif self.layer == RAW_LAYER:
            node = self._file.get("raw/X")
            if node is None:
                raise InputError(f"{self.path} has no adata.raw; available layers: {self._layers_text()}")
        else:
            node = self._file.get(f"layers/{self.layer}")
            if node is None:
                if self.layer_origin is None:
                    raise InputError(
                        f"layer '{self.layer}' not found in {self.path}; available layers: "
                        f"{self._layers_text()} (omit --layer to use X)"
                    )
                raise InputError(
                    f"layer '{self.layer}' ({self.layer_origin}) not found in {self.path}; available layers: "
                    f"{self._layers_text()}; pass --layer (layer= in Python) to choose another"
                )
        self._var = self._group(var_name)
        self._node = node
        encoding = node.attrs.get("encoding-type", "array" if isinstance(node, h5py.Dataset) else "")
        if isinstance(encoding, bytes):
            encoding = encoding.decode()
        if not encoding and "h5sparse_format" in node.attrs:  # anndata < 0.7 sparse matrices
            legacy = node.attrs["h5sparse_format"]
            encoding = f"{legacy.decode() if isinstance(legacy, bytes) else legacy}_matrix"
        if encoding == "csr_matrix":
            self.format = "csr"
            self._indptr = node["indptr"][:].astype(np.int64)
            self.shape = tuple(int(s) for s in node.attrs.get("shape", node.attrs.get("h5sparse_shape")))
        elif encoding == "csc_matrix":
            from anndata.io import sparse_dataset

            self.format = "csc"
            self._sparse = sparse_dataset(node)
            self.shape = tuple(int(s) for s in node.attrs.get("shape", node.attrs.get("h5sparse_shape")))
        elif isinstance(node, h5py.Dataset) and node.ndim == 2:
            self.format = "dense"
            self.shape = tuple(int(s) for s in node.shape)
        else:
            raise InputError(
                f"{self.path}: {self.matrix_name} is not a 2-D dense or sparse matrix ({encoding!r})"
            )
        n_obs = len(obs[obs.attrs["_index"]])
        n_var = len(self._var[self._var.attrs["_index"]])
        if self.shape != (n_obs, n_var):
            raise InputError(
                f"{self.path}: {self.matrix_name} has shape {self.shape} but obs/var have {n_obs} cells "
                f"and {n_var} genes; the file is inconsistent"
            )

    def matrices(self) -> list[str]:
        """Matrices of the file that ``--layer`` can name: ``X``, each layer, ``raw.X``."""
        names = ["X"] if "X" in self._file else []
        names += [str(k) for k in self._file.get("layers", {}).keys()]
        if "raw" in self._file and "X" in self._file["raw"]:
            names.append(RAW_LAYER)
        return names

    def _layers_text(self) -> str:
        return ", ".join(self.matrices()) or "none"

    @property
    def matrix_name(self) -> str:
        return "X" if self.layer is None else f"layer '{self.layer}'"

    @property
    def n_obs(self) -> int:
        return self.shape[0]

    @property
    def n_vars(self) -> int:
        return self.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return (self._node["data"] if self.format != "dense" else self._node).dtype

    # -- obs / var -----------------------------------------------------------------------------
    def _read_column(self, group: h5py.Group, key: str) -> np.ndarray | pd.Categorical:
        from anndata.io import read_elem

        if isinstance(group, _LegacyTable):
            return group.column(key)
        try:
            values = read_elem(group[key])
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(
                f"cannot read '{key}' of {group.name} in {self.path}: the file is corrupt ({exc})"
            ) from None
        if isinstance(values, pd.Categorical):
            return values
        return _decode(np.asarray(values))

    @property
    def obs_columns(self) -> list[str]:
        obs = self._obs
        index = obs.attrs["_index"]
        order = [str(c) for c in obs.attrs.get("column-order", [])]
        return order or [k for k in obs.keys() if k != index and k != "__categories"]

    def obs_names(self) -> np.ndarray:
        obs = self._obs
        return self._read_column(obs, obs.attrs["_index"]).astype(str)

    def obs_column(self, key: str) -> np.ndarray | pd.Categorical:
        """One ``obs`` column; a missing key raises :class:`InputError` listing the available columns."""
        if key not in self.obs_columns:
            raise InputError(
                f"column '{key}' not found in obs of {self.path}; available columns: "
                f"{', '.join(self.obs_columns) or 'none'}"
            )
        return self._read_column(self._obs, key)

    @property
    def var_columns(self) -> list[str]:
        order = [str(c) for c in self._var.attrs.get("column-order", [])]
        return order or [k for k in self._var.keys() if k != self._var.attrs["_index"]]

    def var_column(self, key: str) -> np.ndarray:
        if key not in self.var_columns:
            raise InputError(
                f"gene column '{key}' not found in var of {self.path}; available columns: "
                f"{', '.join(self.var_columns) or 'none'} (omit --gene-key to use var_names)"
            )
        values = self._read_column(self._var, key)
        return np.asarray(values, dtype=object)

    def var_names(self) -> np.ndarray:
        return np.asarray(self._read_column(self._var, self._var.attrs["_index"]), dtype=object)

    def gene_names(self) -> np.ndarray:
        """Gene identifiers: ``var[gene_key]`` when given, else ``var_names`` (object array of str)."""
        names = self.var_names() if self.gene_key is None else self.var_column(self.gene_key)
        return np.array([str(n) for n in names], dtype=object)

    # -- matrix --------------------------------------------------------------------------------
    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` of the chosen matrix as CSR (values as stored)."""
        stop = min(stop, self.n_obs)
        try:
            return self._read_rows(start, stop)
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(
                f"cannot read cells {start}-{stop - 1} of {self.matrix_name} in {self.path}: the file is corrupt "
                f"or truncated ({exc}); re-save or re-download it"
            ) from None

    def _read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        if self.format == "csr":
            lo, hi = int(self._indptr[start]), int(self._indptr[stop])
            data = supported_dtype(self._node["data"][lo:hi])
            indices = self._node["indices"][lo:hi]
            check_column_indices(indices, self.n_vars, f"{self.matrix_name} of {self.path}", start, stop)
            indptr = self._indptr[start : stop + 1] - lo
            return sp.csr_matrix((data, indices, indptr), shape=(stop - start, self.n_vars))
        if self.format == "csc":
            return sp.csr_matrix(self._sparse[start:stop])
        return sp.csr_matrix(supported_dtype(self._node[start:stop]))

    def iter_blocks(self, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        """Contiguous row blocks ``(start, X[start:start + chunk_size])`` over the whole file."""
        for start in range(0, self.n_obs, chunk_size):
            yield start, self.read_rows(start, start + chunk_size)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> H5adReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
