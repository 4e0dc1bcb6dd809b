"""Small text helpers shared by every stage (a leaf: imports nothing from cellformer)."""

from __future__ import annotations

import os
import re
import sys


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 cell``, ``2 cells`` (``words`` for irregular plurals)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def natural_key(label: str) -> tuple:
    """Sort key putting ``class_2`` before ``class_10`` and ``"9"`` before ``"10"``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", label))


def is_primary_process() -> bool:
    """Whether this is the first process of a (possibly multi-process) run: the one that reports and
    writes. Inside a running torch.distributed group its rank decides; before one exists, the rank
    variables the launchers set, in Lightning's order (``RANK``, ``LOCAL_RANK`` / ``NODE_RANK`` from its
    own DDP launcher, ``SLURM_PROCID`` under ``srun``, ``JSM_NAMESPACE_RANK`` under ``jsrun``). Does not
    import torch (``--help`` stays instant)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank() == 0
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(name, "0") != "0":
            return False
    return True
