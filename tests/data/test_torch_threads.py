"""Preparing data leaves torch's thread count as the caller set it (numba's OpenMP layer, behind scanpy's
QC metrics, shares libgomp with torch and resets its thread count on its first parallel kernel)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from cellformer.threads import torch_threads_kept


def test_the_thread_count_set_inside_is_undone_on_exit() -> None:
    before = torch.get_num_threads()
    try:
        with torch_threads_kept():
            torch.set_num_threads(before + 1)
            assert torch.get_num_threads() == before + 1
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


SCRIPT = """
import sys, torch, cellformer
torch.set_num_threads(1)
print("threads before prepare:", torch.get_num_threads())
cellformer.prepare(sys.argv[1], out=sys.argv[2], input_normalized=True, max_genes=32)
print("threads after prepare:", torch.get_num_threads())
"""


def test_prepare_keeps_the_callers_torch_threads(pbmc68k_path: Path, tmp_path: Path) -> None:
    # a fresh process: numba resets the count only on its first parallel kernel in a process; 3 numba
    # threads so the reset would show on any machine
    env = {**os.environ, "NUMBA_NUM_THREADS": "3", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(pbmc68k_path), str(tmp_path / "prepared")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "threads before prepare: 1" in out.stdout and "threads after prepare: 1" in out.stdout, out.stdout
