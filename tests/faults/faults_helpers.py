"""Shared by the fault-injection tests: tiny settings, the one-line error check, injected OS errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from shared_helpers import TINY as _TINY
from shared_helpers import error_line  # noqa: F401  (re-exported for this folder's tests)

TINY = {**_TINY, "max_epochs": 1}  # one epoch: the plumbing is tested, not accuracy
PREPARE = dict(max_genes=64, min_genes=10)  # the 420-cell, 1500-gene bladder subset (conftest.py)


def tiny_args(**changes) -> list[str]:
    """TINY as ``train`` command-line options."""
    values = {**TINY, **changes}
    return [item for key, value in values.items() for item in (f"--{key.replace('_', '-')}", str(value))]


def disk_full(path: str | os.PathLike | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), None if path is None else str(path))


def leftovers(directory: Path) -> list[str]:
    """Hidden temporary siblings (``.NAME.tmp-PID``) an interrupted write would leave behind."""
    return sorted(p.name for p in Path(directory).iterdir() if ".tmp-" in p.name or ".old-" in p.name)
