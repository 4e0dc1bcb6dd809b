"""A really full disk (a 200 KiB tmpfs): what h5py, torch and safetensors raise becomes one line, and
nothing is left on the disk. Needs root and a kernel that lets it mount tmpfs (skipped otherwise); the
injected faults of test_fault_os.py cover the same paths everywhere."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from faults_helpers import error_line, tiny_args


def _tmpfs(disk: Path, options: str):
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture
def full_disk(tmp_path: Path):
    yield from _tmpfs(tmp_path / "disk", "size=200k")


@pytest.fixture
def read_only_disk(tmp_path: Path):
    yield from _tmpfs(tmp_path / "ro", "ro,size=200k")


def test_a_read_only_location_fails_before_any_work(cli, read_only_disk, small_h5ad, small_run):
    for args in (
        ("prepare", small_h5ad, "--out", read_only_disk / "prep", "--min-genes", 10),
        ("predict", small_run, small_h5ad, "--out", read_only_disk / "a.h5ad"),
    ):
        line = error_line(*cli(*args))
        assert "read-only" in line and str(read_only_disk) in line and "writable" in line, line


def test_each_command_on_a_full_disk(full_disk, small_h5ad, small_prepared, small_run):
    import sys

    commands = {
        "prepare": ["prepare", small_h5ad, "--out", full_disk / "prep", "--min-genes", 10],
        "train": ["train", small_prepared, "--out", full_disk / "run", *tiny_args()],
        "baseline": ["baseline", small_prepared, "--method", "logreg", "--out", full_disk / "lr"],
        # HDF5 crashes at exit after a failed write: the command must still end with its line and 2
        "predict": ["predict", small_run, small_h5ad, "--out", full_disk / "a.h5ad", "--no-umap"],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name, args in commands.items():  # each in a process of its own, as a user runs them
        command = [sys.executable, "-m", "cellformer.cli", *map(str, args)]
        done = subprocess.run(command, capture_output=True, env=env, check=False)
        line = error_line(done.returncode, done.stderr.decode())
        assert "no space left" in line and str(full_disk) in line and ".tmp-" not in line, (name, line)
        assert sorted(p.name for p in full_disk.iterdir()) == [], name  # nothing half-written left
