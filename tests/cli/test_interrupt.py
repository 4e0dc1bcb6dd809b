"""Ctrl-C / SIGTERM during `cellformer train`: one line, exit 130 / 143, a resumable run, nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import SUBPROCESS_ENV, TINY_ARGS, cellformer_command

from cellformer.atomic import read_json


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_train_says_how_to_resume(small_prepared: Path, tmp_path: Path, signum: int) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        cellformer_command(
            "train", small_prepared, "--out", out, *TINY_ARGS, "--max-epochs", "200", "--patience", "2"
        ),
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a terminal's Ctrl-C: pytest run under `nohup ... &` ignores SIGINT, and an ignored signal is
        # inherited (and, rightly, kept ignored by `cellformer train`)
        preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL),
    )
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signum)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 128 + signum, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == f"interrupted; continue with: cellformer train {small_prepared} --out {out} --resume"
    assert "Traceback" not in stderr and stdout == ""
    # per-epoch lines on stderr (INFO), e.g. "epoch 1/200: train loss 2.77, val loss 2.70, val macro-F1 0.05"
    assert any(line.startswith("epoch 1/200: train loss ") and "val macro-F1" in line for line in lines)
    # resumable: the run is still "training", with its checkpoint, no weights file, no temporary files
    assert read_json(out / "config.json")["status"] == "training"
    assert last.exists() and not (out / "model.safetensors").exists()
    assert not [p for p in out.rglob(".*") if ".tmp-" in p.name]

    if signum == signal.SIGTERM:  # and it resumes to a finished run
        done = subprocess.run(
            cellformer_command("-q", "train", small_prepared, "--out", out, "--resume"),
            env=SUBPROCESS_ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert read_json(out / "config.json")["status"] == "finished"
        assert (out / "model.safetensors").exists()
