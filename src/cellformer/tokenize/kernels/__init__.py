"""Numba kernels of the tokenizers, a module per job (``kernels.medians.median_pass``, ...): loops over
the rows of CSR arrays ``(indptr, indices, data)``.

- :mod:`~cellformer.tokenize.kernels.sorting`: float64 values as sortable int64 keys, a row's stable
  sort, quickselect;
- :mod:`~cellformer.tokenize.kernels.rows`: each row's total (exact for counts), the longest row;
- :mod:`~cellformer.tokenize.kernels.medians`: each gene's exact nonzero median (the rank tokenizer's fit);
- :mod:`~cellformer.tokenize.kernels.rank_tokens`: a row's top genes by ``x / total / median``;
- :mod:`~cellformer.tokenize.kernels.value_bins`: a row's quantile bins and the binned tokens;
- :mod:`~cellformer.tokenize.kernels.count_bins`: the same bins and tokens from a row's distinct counts;
- :mod:`~cellformer.tokenize.kernels.hvg_sums`: per-gene sums for the highly variable genes.

Every kernel expects a canonical CSR matrix without explicit zeros (``rank._as_csr``), so a
row's entries are its nonzero genes in ascending gene order. Float arithmetic is the one of the
plain numpy code it replaces, operation for operation (no ``fastmath``), so results are
bit-identical; ``log1p`` stays in numpy (its SIMD version may differ from libm in the last bit).

Orderings use the bits of positive float64 values read as int64 ("keys"), which sort exactly like
the values. Kernels are compiled on first use and cached on disk (``cache=True``); a cell's
scratch arrays are allocated once per call, for the longest row. numba's cache notices changes to a
kernel's own file only, not to the kernels and constants it uses from other files (``sorting``,
``rows``, ``value_bins``, ``cellformer.tokens``): ``tests/tokenize/test_kernel_cache.py`` fails when a
cached kernel is older than one of them (delete ``kernels/__pycache__`` then).
"""

from cellformer.tokenize.kernels import count_bins, hvg_sums, medians, rank_tokens, rows, sorting, value_bins

__all__ = ["count_bins", "hvg_sums", "medians", "rank_tokens", "rows", "sorting", "value_bins"]
