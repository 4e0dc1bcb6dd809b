"""An ``.h5ad`` file's cells, read chunk by chunk as small in-memory AnnData objects (for prediction).

Only ``obs`` and the gene names are held for the whole file; each chunk reads its rows of the one matrix
prediction uses (``X``, a layer, or ``raw.X``; plus a previous-time-point layer when the run needs it)
through :class:`~cellformer.data.read.H5adReader`, so memory is set by the chunk size, not by the file.
A chunk looks to the rest of cellformer like the same rows of ``anndata.read_h5ad(path)``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellformer.data.read import RAW_LAYER, H5adReader
from cellformer.errors import InputError

if TYPE_CHECKING:
    import anndata as ad


def is_modern_h5ad(path: str | Path) -> bool:
    """Whether ``path`` has anndata's element encoding (anndata >= 0.8); older files are read whole."""
    try:
        with h5py.File(path, "r") as file:
            obs = file.get("obs")
            return isinstance(obs, h5py.Group) and "encoding-type" in obs.attrs
    except OSError:
        return False


class FileCells:
    """The cells of one ``.h5ad`` file (never modified), ``chunk_size`` at a time.

    Parameters
    ----------
    path
        The file.
    layer, gene_key, layer_origin
        The matrix (``None``: ``X``; ``"raw.X"``: ``adata.raw.X``), the ``var`` column naming genes, and
        where the layer came from (:class:`~cellformer.data.read.H5adReader`).
    extra_layers
        Layers each chunk carries besides (the previous-time-point profile).
    chunk_size
        Rows per block of :meth:`blocks` (the value checks), so they hold no more than a chunk.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        layer: str | None = None,
        gene_key: str | None = None,
        extra_layers: tuple[str, ...] = (),
        chunk_size: int = 4096,
        layer_origin: str | None = None,
    ) -> None:
        from anndata.io import read_elem

        self.chunk_size = chunk_size
        self.path = Path(path)
        self.layer = layer
        self.gene_key = gene_key
        self.reader = H5adReader(self.path, layer, gene_key, layer_origin=layer_origin)
        self.matrices = self.reader.matrices()
        self.extra = {}
        for name in extra_layers:
            if name not in self.matrices:
                continue  # the caller reports a missing layer in its own words
            self.extra[name] = H5adReader(self.path, name)
        try:
            with h5py.File(self.path, "r") as file:
                self.obs = read_elem(file["obs"])
                self._var = read_elem(file["var"])
                self._raw_var = read_elem(file["raw/var"]) if layer == RAW_LAYER else None
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise InputError(f"cannot read obs / var of {self.path}: the file is corrupt ({exc})") from None

    @property
    def n_obs(self) -> int:
        return self.reader.n_obs

    @property
    def layers(self) -> list[str]:
        """The file's layer names (as ``adata.layers.keys()`` would list them)."""
        return [name for name in self.matrices if name not in ("X", RAW_LAYER)]

    def chunk(self, start: int, stop: int) -> ad.AnnData:
        """Rows ``start:stop`` as an in-memory AnnData holding the chosen matrix (and the extra layers)."""
        with warnings.catch_warnings():  # duplicate gene names: reported once, by the alignment
            warnings.filterwarnings("ignore", "Variable names are not unique")
            return self._chunk(start, min(stop, self.n_obs))

    def _chunk(self, start: int, stop: int) -> ad.AnnData:
        import anndata as ad

        obs = self.obs.iloc[start:stop]
        rows = self.reader.read_rows(start, stop)
        layers = {name: reader.read_rows(start, stop) for name, reader in self.extra.items()}
        if self.layer is None:
            adata = ad.AnnData(X=rows, obs=obs, var=self._var, layers=layers or None)
        elif self.layer == RAW_LAYER:
            empty = sp.csr_matrix((stop - start, len(self._var)), dtype=np.float32)
            adata = ad.AnnData(X=empty, obs=obs, var=self._var, layers=layers or None)
            adata.raw = ad.AnnData(X=rows, obs=obs, var=self._raw_var)
        else:
            adata = ad.AnnData(obs=obs, var=self._var, layers={self.layer: rows, **layers})
        return adata

    def chunks(self, chunk_size: int, start: int = 0, stop: int | None = None) -> Iterator[ad.AnnData]:
        """Consecutive chunks of rows ``start:stop`` (default: every cell)."""
        stop = self.n_obs if stop is None else stop
        for first in range(start, stop, chunk_size):
            yield self.chunk(first, min(first + chunk_size, stop))

    def blocks(self) -> Iterator[tuple[int, sp.csr_matrix]]:
        """``(first row, rows)`` of the chosen matrix over the whole file, ``chunk_size`` rows at a time."""
        return self.reader.iter_blocks(self.chunk_size)

    def identity(self) -> dict[str, Any]:
        """What names this file's cells (for joining shards): size, cells and a digest of ``obs_names``."""
        names = "\n".join(map(str, self.obs.index)).encode()
        return {
            "file": self.path.name,
            "bytes": int(self.path.stat().st_size),
            "n_obs": int(self.n_obs),
            "obs_names_sha256": hashlib.sha256(names).hexdigest(),
        }

    def close(self) -> None:
        self.reader.close()
        for reader in self.extra.values():
            reader.close()


def obs_frame(names: pd.Index) -> pd.DataFrame:
    """An empty ``obs`` with these cell names (the frame annotations are written into)."""
    return pd.DataFrame(index=pd.Index(np.asarray(names, dtype=str), name=None))
