"""Atomic outputs: normal permissions for colleagues, and leftovers of killed processes cleaned up."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cellformer.atomic import atomic_directory, atomic_path, remove_stale_siblings


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_outputs_get_the_umask_mode(tmp_path: Path, umask_022) -> None:
    from safetensors.numpy import save_file

    weights = tmp_path / "model.safetensors"
    with atomic_path(weights) as tmp:  # safetensors itself creates files 0600
        save_file({"w": np.zeros(3, np.float32)}, str(tmp))
    assert _mode(weights) == 0o644
    with atomic_directory(tmp_path / "out") as tmp:
        os.chmod(tmp, 0o700)
        (tmp / "a.txt").write_text("x")
    assert _mode(tmp_path / "out") == 0o755

    os.umask(0o077)  # a private umask is respected too
    with atomic_path(tmp_path / "private.json") as tmp:
        tmp.write_text("{}")
    assert _mode(tmp_path / "private.json") == 0o600


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporary_siblings_are_removed(tmp_path: Path, caplog) -> None:
    dead = _dead_pid()
    stale_tmp = tmp_path / f".out.tmp-{dead}"
    stale_old = tmp_path / f".out.old-{dead}"
    alive = tmp_path / f".out.tmp-{os.getppid()}"  # a process that is still running
    other = tmp_path / f".other.tmp-{dead}"  # another output's leftovers are not ours to judge
    for path in (stale_tmp, stale_old, alive, other):
        (path / "tokens").mkdir(parents=True)
    with caplog.at_level("INFO", logger="cellformer.atomic"):
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "meta.json").write_text("{}")
    assert not stale_tmp.exists() and not stale_old.exists()
    assert alive.exists() and other.exists() and (tmp_path / "out" / "meta.json").exists()
    assert f"process {dead}" in caplog.text and "interrupted" in caplog.text
    assert remove_stale_siblings(tmp_path / "out") == []
    # single files too (e.g. a checkpoint half-written by a killed `train`)
    half = tmp_path / f".last.ckpt.tmp-{dead}"
    half.write_bytes(b"partial")
    with atomic_path(tmp_path / "last.ckpt") as tmp:
        tmp.write_bytes(b"complete")
    assert not half.exists() and (tmp_path / "last.ckpt").read_bytes() == b"complete"


def test_prepare_removes_what_a_killed_prepare_left(cli, bladder_path: Path, tmp_path: Path) -> None:
    leftover = tmp_path / f".prep.tmp-{_dead_pid()}"
    (leftover / "tokens").mkdir(parents=True)
    code, err = cli("-q", "prepare", bladder_path, "--out", tmp_path / "prep", "--max-genes", "16")
    assert code == 0, err
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep"]
