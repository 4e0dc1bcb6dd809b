"""numba caches each tokenizer kernel on disk (``cache=True``) and notices changes to the kernel's own file
only: a kernel compiled before a file it uses changed (another ``kernels`` module, ``cellformer.tokens``)
would run the old code."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from cellformer.tokenize import kernels

PACKAGE = Path(kernels.__file__).parent


def used_files(module: Path, seen: set[Path] | None = None) -> set[Path]:
    """``module`` and every cellformer module it imports, directly or through another."""
    seen = set() if seen is None else seen
    seen.add(module)
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cellformer."):
            path = Path(importlib.util.find_spec(node.module).origin)
            if path not in seen:
                used_files(path, seen)
    return seen


def test_no_cached_kernel_is_older_than_a_file_it_uses() -> None:
    stale = []
    for module in PACKAGE.glob("*.py"):
        changed = max(path.stat().st_mtime for path in used_files(module))
        compiled = (PACKAGE / "__pycache__").glob(f"{module.stem}.*.nbc")  # one file per compiled signature
        stale += [path.name for path in compiled if path.stat().st_mtime < changed]
    assert not stale, (
        f"compiled kernels older than a file they use: {', '.join(sorted(stale))}; "
        f"delete {PACKAGE / '__pycache__'} (numba compiles them again)"
    )


def test_every_job_module_is_reached_through_the_package() -> None:
    jobs = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert jobs == set(kernels.__all__)
