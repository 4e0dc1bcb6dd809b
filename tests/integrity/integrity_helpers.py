"""Shared by the integrity tests: tiny settings and the one-line error check."""

from __future__ import annotations

from shared_helpers import TINY as _TINY
from shared_helpers import error_line  # noqa: F401  (re-exported for this folder's tests)

TINY = {**_TINY, "max_epochs": 1}  # one epoch: the plumbing is tested, not accuracy
PREPARE = dict(max_genes=32, input_normalized=True)  # pbmc68k_reduced holds log1p-normalized values


def rerecord(directory) -> None:
    """Record ``directory``'s files again after damaging them: the damage a manifest cannot see, left
    for the readers' own checks."""
    from cellformer.integrity import write_manifest

    write_manifest(directory, "run" if (directory / "config.json").exists() else "prepared")
