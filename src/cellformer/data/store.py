"""The on-disk token store: ragged token ids (and value ids) as raw memory-mapped arrays.

Layout inside a prepared directory (see ``docs/design.md``)::

    tokens/ids.bin       int32, all cells' token ids back to back
    tokens/values.bin    int16, value ids beside ids (only for tokenizers with values)
    tokens/offsets.npy   int64 (n_cells + 1,): cell i is ids[offsets[i]:offsets[i + 1]]

Writing streams chunk by chunk, so memory does not grow with the number of cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellformer.errors import RunDirError
from cellformer.tokens import TokenizedCells

IDS_DTYPE = np.int32
VALUES_DTYPE = np.int16


class TokenStoreWriter:
    """Append :class:`TokenizedCells` chunks to ``directory/tokens``; call :meth:`close` at the end."""

    def __init__(self, directory: str | Path, has_values: bool) -> None:
        self.directory = Path(directory) / "tokens"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.has_values = has_values
        self._ids = open(self.directory / "ids.bin", "wb")
        self._values = open(self.directory / "values.bin", "wb") if has_values else None
        self._lengths: list[np.ndarray] = []

    def append(self, cells: TokenizedCells) -> None:
        if (cells.values is not None) != self.has_values:
            raise ValueError("chunk values do not match the store's has_values")
        self._ids.write(np.ascontiguousarray(cells.ids, dtype=IDS_DTYPE).tobytes())
        if self._values is not None:
            self._values.write(np.ascontiguousarray(cells.values, dtype=VALUES_DTYPE).tobytes())
        self._lengths.append(cells.lengths.astype(np.int64))

    def close(self) -> np.ndarray:
        """Flush files, write offsets; returns the per-cell lengths."""
        self._ids.close()
        if self._values is not None:
            self._values.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        np.save(self.directory / "offsets.npy", np.r_[0, np.cumsum(lengths)].astype(np.int64))
        return lengths


class TokenStore:
    """Read-only, memory-mapped view of a token store; nothing is loaded up front."""

    def __init__(self, directory: str | Path) -> None:
        base = Path(directory) / "tokens"
        offsets_path = base / "offsets.npy"
        if not offsets_path.exists():
            raise RunDirError(
                f"{directory} has no token store ({offsets_path} is missing); run `cellformer prepare`"
            )
        try:
            self.offsets = np.load(offsets_path)
        except (OSError, ValueError, EOFError):
            raise RunDirError(
                f"token offsets {offsets_path} are unreadable or truncated; the token store is damaged: "
                "prepare again"
            ) from None
        offsets = self.offsets
        if (
            offsets.ndim != 1
            or len(offsets) == 0
            or offsets.dtype.kind not in "iu"
            or offsets[0] != 0
            or np.any(np.diff(offsets) < 0)
        ):
            raise RunDirError(
                f"token offsets {offsets_path} are not a valid index (int, starting at 0, non-decreasing); "
                "the token store is damaged: prepare again"
            )
        total = int(self.offsets[-1])
        self.ids = _memmap(base / "ids.bin", IDS_DTYPE, total)
        values_path = base / "values.bin"
        self.values = _memmap(values_path, VALUES_DTYPE, total) if values_path.exists() else None

    @property
    def has_values(self) -> bool:
        return self.values is not None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def cell(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Token ids (and value ids) of cell ``i`` as arrays copied out of the memmap."""
        start, stop = self.offsets[i], self.offsets[i + 1]
        values = None if self.values is None else np.array(self.values[start:stop])
        return np.array(self.ids[start:stop]), values

    def subset(self, rows: np.ndarray) -> TokenizedCells:
        """Materialise the given rows as :class:`TokenizedCells` (for small selections)."""
        parts_ids, parts_values, lengths = [], [], []
        for i in rows:
            ids, values = self.cell(int(i))
            parts_ids.append(ids)
            parts_values.append(values)
            lengths.append(len(ids))
        ids = np.concatenate(parts_ids) if parts_ids else np.zeros(0, IDS_DTYPE)
        values = (
            None
            if self.values is None
            else (np.concatenate(parts_values) if parts_values else np.zeros(0, VALUES_DTYPE))
        )
        return TokenizedCells(ids, np.r_[0, np.cumsum(lengths)].astype(np.int64), values)


def _memmap(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    expected = count * np.dtype(dtype).itemsize
    if not path.exists() or path.stat().st_size != expected:
        raise RunDirError(
            f"token file {path} is missing or truncated (expected {expected} bytes); prepare again"
        )
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))
