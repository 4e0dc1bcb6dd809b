"""Shared by the fault-injection tests: tiny settings, the one-line error check, injected OS errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

# tests/training/training_helpers.py TINY, one epoch: the plumbing is tested, not accuracy
TINY = dict(
    n_layers=1,
    d_model=32,
    n_heads=2,
    ff_hidden=64,
    head_hidden=32,
    dropout=0.1,
    max_length=64,
    batch_size=64,
    max_epochs=1,
    lr=1e-2,
    warmup_fraction=0.1,
    progress_bar=False,
)
PREPARE = dict(max_genes=64, min_genes=10)  # the 420-cell, 1500-gene bladder subset (conftest.py)


def tiny_args(**changes) -> list[str]:
    """TINY as ``train`` command-line options."""
    values = {**TINY, **changes}
    return [item for key, value in values.items() for item in (f"--{key.replace('_', '-')}", str(value))]


def error_line(code: int, err: str) -> str:
    """The one ``error:`` line of a refused command (no traceback)."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def disk_full(path: str | os.PathLike | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), None if path is None else str(path))


def leftovers(directory: Path) -> list[str]:
    """Hidden temporary siblings (``.NAME.tmp-PID``) an interrupted write would leave behind."""
    return sorted(p.name for p in Path(directory).iterdir() if ".tmp-" in p.name or ".old-" in p.name)
