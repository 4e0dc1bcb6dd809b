"""Shared by the training tests: tiny configurations, and comparing two run directories."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

# Training tests use one thread: on a shared 2-core machine more threads oversubscribe badly, and
# the resume test compares an in-process run with a subprocess one (same thread count, same numbers).
THREADS = 1
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}

# A model small enough that a few epochs on ~1500 cells take seconds on a 2-core CPU.
TINY = dict(
    n_layers=1,
    d_model=32,
    n_heads=2,
    ff_hidden=64,
    head_hidden=32,
    dropout=0.1,
    max_length=64,
    batch_size=64,
    max_epochs=8,
    lr=1e-2,
    warmup_fraction=0.1,
    progress_bar=False,
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
