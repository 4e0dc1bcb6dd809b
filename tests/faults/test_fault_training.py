"""Training health: divergence stops training with one line, a run is finished only when complete, a
failure before the first epoch leaves no run directory behind, execution settings are what ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from faults_helpers import TINY, disk_full, error_line, tiny_args

from cellformer.errors import ConfigError, RunDirError


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def test_too_high_lr_stops_with_one_line_and_the_run_is_not_finished(cli, small_prepared, tmp_path):
    run = tmp_path / "run"
    line = error_line(*cli("train", small_prepared, "--out", run, *tiny_args(lr=1e6)))
    assert "diverged" in line and "--lr" in line and "NaN" in line, line
    config = _config(run)
    assert config["status"] == "diverged"
    assert config["result"]["diverged"]["lr"] == 1e6
    assert not (run / "model.safetensors").exists()
    # evaluate, predict and resume refuse it, in one line each
    line = error_line(*cli("evaluate", run))
    assert "diverged" in line and "--lr" in line, line
    line = error_line(*cli("train", small_prepared, "--out", run, "--resume", *tiny_args(lr=1e6)))
    assert "diverged" in line, line


@pytest.mark.parametrize(("where", "what"), [("train", "the gradients"), ("val", "the validation loss")])
def test_divergence_keeps_the_last_healthy_checkpoint(small_prepared, tmp_path, monkeypatch, where, what):
    import cellformer
    from cellformer.training.checkpointing import completed_epochs
    from cellformer.training.health import TrainingDiverged
    from cellformer.training.module import CellClassifierModule

    forward = CellClassifierModule.forward

    def poisoned(self, batch):  # from the second epoch on, NaN outputs in training (or validation)
        logits, cls = forward(self, batch)
        if self.current_epoch >= 1 and self.training == (where == "train"):
            logits = logits * float("nan")
        return logits, cls

    monkeypatch.setattr(CellClassifierModule, "forward", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as caught:
        cellformer.train(small_prepared, out=run, **{**TINY, "max_epochs": 3})
    message = str(caught.value)
    assert what in message and "epoch 2" in message and "after epoch 1" in message, message
    last = run / "checkpoints" / "last.ckpt"
    assert completed_epochs(last) == 1  # the NaN epoch wrote no checkpoint
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert len((run / "log.csv").read_text().strip().splitlines()) == 2  # header + epoch 1
    config = _config(run)
    assert config["status"] == "diverged" and config["result"]["last_good_checkpoint"].startswith(str(last))
    with pytest.raises(RunDirError, match="diverged"):
        cellformer.load(run)


def test_finished_only_once_calibration_is_written(small_prepared, tmp_path, monkeypatch):
    import cellformer
    from cellformer.calibration.unknown import UnknownDetector

    save = UnknownDetector.save

    def full(self, run_dir):
        raise disk_full(Path(run_dir) / "unknown.json")

    monkeypatch.setattr(UnknownDetector, "save", full)
    run = tmp_path / "run"
    with pytest.raises(OSError):
        cellformer.train(small_prepared, out=run, **TINY)
    assert (run / "model.safetensors").exists() and not (run / "unknown.json").exists()
    assert _config(run)["status"] == "training"  # not "finished": its calibration is missing
    with pytest.raises(RunDirError, match="did not finish.*--resume"):
        cellformer.load(run)

    monkeypatch.setattr(UnknownDetector, "save", save)
    cellformer.train(small_prepared, out=run, resume=True, **TINY)
    assert _config(run)["status"] == "finished" and (run / "unknown.json").exists()
    cellformer.load(run)


def test_failure_before_the_first_epoch_leaves_no_run_directory(small_prepared, tmp_path, monkeypatch):
    import cellformer
    from cellformer.training import trainer

    run = tmp_path / "run"

    def broken(*args, **kwargs):
        raise ConfigError("injected: cannot set up training")

    monkeypatch.setattr(trainer, "build_trainer", broken)
    with pytest.raises(ConfigError, match="injected"):
        cellformer.train(small_prepared, out=run, **TINY)
    assert not run.exists()  # nothing in state "training" blocks the same --out
    run.mkdir()  # an empty directory made beforehand is emptied again, not removed
    with pytest.raises(ConfigError, match="injected"):
        cellformer.train(small_prepared, out=run, **TINY)
    assert run.is_dir() and list(run.iterdir()) == []
    monkeypatch.undo()
    cellformer.train(small_prepared, out=run, **TINY)
    assert _config(run)["status"] == "finished"


def test_disk_full_while_saving_the_first_checkpoint(cli, small_prepared, tmp_path, monkeypatch):
    from cellformer.training.checkpointing import AtomicCheckpointIO

    def full(self, checkpoint, path, storage_options=None):
        raise disk_full(path)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", full)
    run = tmp_path / "run"
    line = error_line(*cli("train", small_prepared, "--out", run, *tiny_args()))
    assert "no space left" in line and str(run) in line, line
    assert not run.exists()


def test_invalid_strategy_is_one_line_and_leaves_nothing(cli, small_prepared, tmp_path):
    run = tmp_path / "run"
    line = error_line(*cli("train", small_prepared, "--out", run, "--strategy", "bogus", *tiny_args()))
    assert "--strategy 'bogus'" in line and "ddp" in line, line
    assert not run.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 autocast runs on a GPU")
def test_fp16_mixed_on_cpu_is_refused_not_silently_replaced(cli, small_prepared, tmp_path):
    run = tmp_path / "run"
    line = error_line(*cli("train", small_prepared, "--out", run, "--precision", "16-mixed", *tiny_args()))
    assert "16-mixed" in line and "bf16-mixed" in line, line
    assert not run.exists()


def test_the_run_records_what_lightning_ran(small_run):
    execution = _config(small_run)["execution"]
    assert execution["precision"] == ("bf16-mixed" if torch.cuda.is_available() else "32-true")
    assert execution["devices"] == 1


def test_torch_save_failure_is_an_os_error_line(cli, small_prepared, tmp_path, monkeypatch):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    def failed(self, checkpoint, path, storage_options=None):  # what torch.save raises on a full disk
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file"
        )

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", failed)
    run = tmp_path / "run"
    line = error_line(*cli("train", small_prepared, "--out", run, *tiny_args()))
    assert "cannot write" in line and ("last.ckpt" in line or "best.ckpt" in line), line
    assert "torch.save failed" in line and ".tmp-" not in line, line
    assert not run.exists()


def test_disk_full_after_an_epoch_says_how_to_resume(cli, small_prepared, tmp_path, monkeypatch):
    from cellformer.training.checkpointing import AtomicCheckpointIO

    save = AtomicCheckpointIO.save_checkpoint
    calls = []

    def full_after_the_first_saved_epoch(self, checkpoint, path, storage_options=None):
        # checkpoints are saved when the monitored metric improves (last.ckpt with best.ckpt): the disk is
        # full from the first improvement after the first saved epoch on
        calls.append(checkpoint["epoch"])
        if checkpoint["epoch"] > calls[0]:
            raise disk_full(path)
        return save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", full_after_the_first_saved_epoch)
    run = tmp_path / "run"
    train_args = tiny_args(max_epochs=4, monitor="val_loss")  # the loss of a learning model improves
    line = error_line(*cli("train", small_prepared, "--out", run, *train_args))
    assert "no space left" in line and f"--out {run} --resume" in line, line
    assert (run / "checkpoints" / "last.ckpt").exists() and _config(run)["status"] == "training"
    monkeypatch.undo()
    code, err = cli("train", small_prepared, "--out", run, "--resume", *train_args)
    assert code == 0, err
    assert _config(run)["status"] == "finished"
