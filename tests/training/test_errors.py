"""Clear errors for wrong inputs: prepared directory, config keys, sizes, values, empty training split."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cellformer
from cellformer.errors import ConfigError, InputError, RunDirError
from cellformer.integrity import write_manifest


def _copy(prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / "copy"))


def test_missing_prepared_dir(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist; run `cellformer prepare`"):
        cellformer.train(tmp_path / "nothing", out=tmp_path / "run")


def test_incomplete_prepared_dir(bladder_prepared: Path, tmp_path: Path) -> None:
    copy = _copy(bladder_prepared, tmp_path)
    (copy / "meta.json").unlink()
    with pytest.raises(RunDirError, match="not a complete prepared dataset"):
        cellformer.train(copy, out=tmp_path / "run")


def test_prepared_dir_of_another_version(bladder_prepared: Path, tmp_path: Path) -> None:
    copy = _copy(bladder_prepared, tmp_path)
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(RunDirError, match="format version 99"):
        cellformer.train(copy, out=tmp_path / "run")


def test_empty_training_split(bladder_prepared: Path, tmp_path: Path) -> None:
    copy = _copy(bladder_prepared, tmp_path)
    with np.load(copy / "splits.npz") as npz:
        splits = {k: npz[k] for k in npz.files}
    np.savez(copy / "splits.npz", **{**splits, "train": np.zeros(0, np.int64)})
    write_manifest(copy, "prepared")  # hand-edited: its files recorded again
    with pytest.raises(InputError, match="no labelled training cells"):
        cellformer.train(copy, out=tmp_path / "run", max_epochs=1)
    assert not (tmp_path / "run").exists()


def test_unknown_key_lists_valid_ones(bladder_prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'n_layer'; valid keys are: model\.n_layers"):
        cellformer.train(bladder_prepared, out=tmp_path / "run", n_layer=2)
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  heads: 3\n")
    with pytest.raises(ConfigError, match="unknown ModelConfig key.*heads.*valid keys are"):
        cellformer.train(bladder_prepared, out=tmp_path / "run", config=config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(d_model=0), "d_model must be positive"),
        (dict(n_heads=-3), "n_heads must be positive"),
        (dict(batch_size=0), "batch_size must be positive"),
        (dict(max_epochs=0), "max_epochs must be positive"),
        (dict(lr=-1.0), "lr must be positive"),
        (dict(n_classes=3), "n_classes is 3 but prepared dataset"),
        (dict(n_values=8), "smaller than the 53 value ids"),  # hybrid: 51 bins + <CLS> + <SEP>
    ],
)
def test_impossible_sizes_are_refused(
    bladder_prepared: Path, tmp_path: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        cellformer.train(bladder_prepared, out=tmp_path / "run", **overrides)
    assert not (tmp_path / "run").exists()


def test_heads_times_width_need_not_equal_d_model(bladder_prepared: Path, tmp_path: Path) -> None:
    run = cellformer.train(
        bladder_prepared,
        out=tmp_path / "run",
        n_layers=1,
        d_model=16,
        n_heads=3,
        head_dim=8,
        max_length=16,
        max_epochs=1,
        progress_bar=False,
    )
    for member in cellformer.load(run).model.members:  # the default model: an ensemble
        assert member.blocks[0].attn.qkv.out_features == 3 * 3 * 8


def test_cli_error_is_one_line(bladder_prepared: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellformer.cli",
            "train",
            str(bladder_prepared),
            "--out",
            str(tmp_path / "r"),
            "--d-model",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: model d_model must be positive, got 0"


def test_wandb_without_the_package_is_a_clear_error(
    bladder_prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    with pytest.raises(ConfigError, match="pip install wandb"):
        cellformer.train(bladder_prepared, out=tmp_path / "run", wandb=True)
    assert not (tmp_path / "run").exists()


def test_gpu_asked_without_one(bladder_prepared: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is available")
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        cellformer.train(bladder_prepared, out=tmp_path / "run", config="reference_gpu")
    assert not (tmp_path / "run").exists()
