"""Tokenize chunks in worker processes, yielding results in input order (identical for any worker count).

Reading stays in the calling process (one h5py handle); workers only run ``tokenizer.transform``,
which depends on nothing but each cell and the fitted state, so the output never depends on ``workers``.
At most ``2 * workers`` chunks are in flight, so memory stays bounded.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

import scipy.sparse as sp

from cellformer.tokenize.base import Tokenizer
from cellformer.tokens import TokenizedCells

_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(tokenizer: Tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _transform(X: sp.csr_matrix, previous: sp.csr_matrix | None) -> TokenizedCells:
    assert _WORKER_TOKENIZER is not None
    return _WORKER_TOKENIZER.transform(X, previous=previous)


def transform_chunks(
    tokenizer: Tokenizer,
    chunks: Iterable[tuple[sp.csr_matrix, sp.csr_matrix | None]],
    workers: int = 1,
) -> Iterator[TokenizedCells]:
    """``tokenizer.transform`` over ``(X, previous)`` chunks, in order, on ``workers`` processes."""
    if workers <= 1:
        for X, previous in chunks:
            yield tokenizer.transform(X, previous=previous)
        return
    context = multiprocessing.get_context("spawn")  # safe with threads (torch, BLAS) in the parent
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(tokenizer,)
    ) as pool:
        pending: deque[Future] = deque()
        for X, previous in chunks:
            pending.append(pool.submit(_transform, X, previous))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
