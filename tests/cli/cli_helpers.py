"""Shared by the command-line UX tests: subprocess environment and a tiny training setting."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# One thread per process: the machine running the suite has two cores, shared.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY_ARGS = [
    "--n-layers", "1", "--d-model", "16", "--n-heads", "2", "--ff-hidden", "32", "--head-hidden", "16",
    "--max-length", "32", "--batch-size", "64", "--lr", "0.01", "--progress-bar", "false",
]  # fmt: skip


def cellformer_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "cellformer.cli", *map(str, args)]
