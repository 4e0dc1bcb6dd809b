"""Resume: kill a real `cellformer train` process once a checkpoint exists, resume, get the same run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_helpers import SUBPROCESS_ENV, TINY, assert_same_run, metrics

import cellformer
from cellformer.errors import ConfigError, RunDirError


def _cli_args(prepared: Path, out: Path, config: dict) -> list[str]:
    args = [sys.executable, "-m", "cellformer.cli", "-q", "train", str(prepared), "--out", str(out)]
    for key, value in config.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _killed_after_first_checkpoint(prepared: Path, out: Path, config: dict) -> Path:
    """``out``: a `cellformer train` process SIGKILLed once its first ``last.ckpt`` exists, mid-run."""
    process = subprocess.Popen(
        _cli_args(prepared, out, config),
        env=SUBPROCESS_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    assert last.exists() and not (out / "model.safetensors").exists()
    assert 1 <= len(metrics(out)) < config["max_epochs"]
    return out


def test_resume_after_sigkill_matches_uninterrupted_run(
    tiny_run: Path, bladder_prepared: Path, tmp_path: Path
) -> None:
    out = _killed_after_first_checkpoint(bladder_prepared, tmp_path / "killed", TINY)

    with pytest.raises(RunDirError, match="training did not finish"):
        cellformer.load(out)
    with pytest.raises(RunDirError, match="already exists; pass --resume"):
        cellformer.train(bladder_prepared, out=out, **TINY)
    with pytest.raises(ConfigError, match="lr: run has"):
        cellformer.train(bladder_prepared, out=out, resume=True, lr=0.5)

    cellformer.train(bladder_prepared, out=out, resume=True, **TINY)
    assert_same_run(tiny_run, out)
    # resuming a finished run does nothing
    cellformer.train(bladder_prepared, out=out, resume=True)
    assert_same_run(tiny_run, out)


def test_resume_needs_a_started_run(bladder_prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a started run directory"):
        cellformer.train(bladder_prepared, out=tmp_path / "never", resume=True)


def test_resume_of_an_ensemble_matches_uninterrupted_run(bladder_prepared: Path, tmp_path: Path) -> None:
    """The default model is an ensemble: each member's weights, optimizer state and gene-dropout view
    continue where the killed run stopped."""
    options = {**TINY, "members": 2, "max_epochs": 4}
    whole = cellformer.train(bladder_prepared, out=tmp_path / "whole", **options)
    out = _killed_after_first_checkpoint(bladder_prepared, tmp_path / "killed", options)
    cellformer.train(bladder_prepared, out=out, resume=True, **options)
    assert_same_run(whole, out)
