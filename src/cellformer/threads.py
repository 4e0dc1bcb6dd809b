"""Torch's thread count, kept across third-party code that resets it.

numba's OpenMP threading layer (behind scanpy's QC metrics, scrublet and UMAP) shares ``libgomp`` with
torch, and its first parallel kernel sets the OpenMP thread count to numba's own (the machine's cores).
Torch then computes with that many threads whatever the caller chose with ``torch.set_num_threads``, and
processes sharing a machine oversubscribe its cores: measured on 2 cores, two benchmark processes each
set to one thread trained 5-20x slower per epoch after a ``prepare`` in the same process.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's intra-op thread count on exit to what it was on entry (nothing to do when torch
    is not imported: then no caller has chosen one)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
