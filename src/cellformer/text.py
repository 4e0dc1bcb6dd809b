"""Small text helpers shared by every stage (a leaf: imports nothing from cellformer)."""

from __future__ import annotations

import os
import re


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 cell``, ``2 cells`` (``words`` for irregular plurals)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def natural_key(label: str) -> tuple:
    """Sort key putting ``class_2`` before ``class_10`` and ``"9"`` before ``"10"``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", label))


def is_primary_process() -> bool:
    """False in the extra processes a multi-device run starts (Lightning's DDP launcher repeats the command
    line with ``LOCAL_RANK`` / ``NODE_RANK`` set); the first process reports and writes the run directory."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
