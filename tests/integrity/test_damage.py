"""Damaged files end in one ``error:`` line naming the file and what to do, never a traceback: caught
by the manifest, or by the readers' own checks when the manifest was recorded after the damage
(``rerecord``) or is missing where the file is read before it is checked."""

from __future__ import annotations

import numpy as np
import pytest
from integrity_helpers import error_line, rerecord


@pytest.mark.parametrize("manifest", [True, False])
@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_damaged_weights(tiny_run, copy_of, cli, damage, manifest):
    run = copy_of(tiny_run)
    path = run / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(
        raw[: len(raw) // 2] if damage == "truncated" else np.random.default_rng(0).bytes(len(raw))
    )
    if not manifest:
        rerecord(run)
    line = error_line(*cli("evaluate", run))
    assert "model.safetensors" in line
    assert ("changed" if manifest else "cannot read the weights") in line


@pytest.mark.parametrize("manifest", [True, False])
def test_truncated_config_json(logreg_run, copy_of, cli, tmp_path, manifest, pbmc68k_path):
    run = copy_of(logreg_run, manifest=manifest)
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text[: len(text) // 2])
    for args in (["evaluate", run], ["predict", run, pbmc68k_path, "--out", tmp_path / "o.h5ad"]):
        line = error_line(*cli(*args))
        assert "config.json" in line and ("truncated" in line)


@pytest.mark.parametrize("manifest", [True, False])
def test_truncated_meta_json(prepared, logreg_run, copy_of, cli, manifest):
    data = copy_of(prepared, manifest=manifest)
    text = (data / "meta.json").read_text()
    (data / "meta.json").write_text(text[:100])
    line = error_line(*cli("evaluate", logreg_run, "--prepared", data))
    assert "meta.json" in line and ("changed size" if manifest else "truncated") in line


def test_truncated_offsets(prepared, logreg_run, copy_of, cli):
    data = copy_of(prepared)
    raw = (data / "tokens" / "offsets.npy").read_bytes()
    (data / "tokens" / "offsets.npy").write_bytes(raw[:-100])
    rerecord(data)
    line = error_line(*cli("train", data, "--out", data.parent / "run", "--max-epochs", "1"))
    assert "offsets.npy" in line and "prepare again" in line
    assert not (data.parent / "run").exists()


def test_out_of_range_token_ids(prepared, tiny_run, copy_of, cli):
    data = copy_of(prepared)
    ids = np.memmap(data / "tokens" / "ids.bin", dtype=np.int32, mode="r+")
    ids[1::7] = 2**30  # every cell keeps its <CLS>, genes become ids no embedding has
    ids.flush()
    del ids
    rerecord(data)
    line = error_line(*cli("evaluate", tiny_run, "--prepared", data))
    assert "token ids" in line and "tokens/ids.bin" in line and "prepare the data again" in line


def test_missing_tokenizer_state(prepared, tiny_run, copy_of, cli, tmp_path, pbmc68k_path):
    data = copy_of(prepared)
    (data / "tokenizer" / "medians.npy").unlink()
    rerecord(data)
    line = error_line(*cli("train", data, "--out", tmp_path / "run", "--max-epochs", "1"))
    assert "medians.npy" in line and "prepare the data again" in line
    assert not (tmp_path / "run").exists()
    run = copy_of(tiny_run)
    (run / "tokenizer" / "medians.npy").unlink()
    rerecord(run)
    line = error_line(*cli("predict", run, pbmc68k_path, "--out", tmp_path / "o.h5ad", "--no-umap"))
    assert "medians.npy" in line and "train the run again" in line
