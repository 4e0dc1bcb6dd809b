"""Shared by the training tests: tiny configurations, and comparing two run directories."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from shared_helpers import TINY  # noqa: F401  (re-exported for the training tests)

# Training tests use one thread: on a shared 2-core machine more threads oversubscribe badly, and
# the resume test compares an in-process run with a subprocess one (same thread count, same numbers).
THREADS = 1
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}

# a test of a training path run for one transformer and for an ensemble (the default model's kind)
ONE_MODEL_AND_AN_ENSEMBLE = pytest.mark.parametrize(
    "members", [1, 2], ids=["one transformer", "ensemble (the default model)"]
)


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def assert_same_run(a: Path, b: Path) -> None:
    ma, mb = metrics(a), metrics(b)
    assert len(ma) == len(mb), (ma, mb)
    for ra, rb in zip(ma, mb, strict=True):
        assert ra == rb, (ra, rb)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def token_batch(prepared, n: int = 64, max_length: int = 64) -> dict[str, torch.Tensor]:
    """The first ``n`` training cells of a :class:`PreparedData`, collated as one batch."""
    from cellformer.data.dataset import TokenDataset, collate_tokens

    rows = prepared.splits["train"][:n]
    dataset = TokenDataset(prepared.store, rows, np.asarray(prepared.labels), max_length)
    return collate_tokens([dataset[i] for i in range(len(rows))])
