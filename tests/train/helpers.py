"""Comparing two run directories: metrics per epoch (without timings) and weights."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from safetensors.torch import load_file


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
