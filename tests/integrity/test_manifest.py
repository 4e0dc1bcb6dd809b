"""Every prepared dataset and run records its files (size + SHA-256); damaged or modified files are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from integrity_helpers import error_line, rerecord

import cellformer
from cellformer.errors import RunDirError
from cellformer.preparation.prepared import PreparedData


def _flip_past_header(path: Path) -> None:
    """Flip bytes of a safetensors file's tensor data: same size, valid header."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    for i in range(start + 16, len(raw), 501):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_manifests_list_every_file(prepared, logreg_run, tiny_run):
    files = json.loads((prepared / "manifest.json").read_text())["files"]
    for name in (
        "meta.json",
        "tokens/ids.bin",
        "tokens/offsets.npy",
        "tokenizer/medians.npy",
        "cell_hashes.npy",
    ):
        assert files[name]["size"] == (prepared / name).stat().st_size
    for run in (logreg_run, tiny_run):
        files = json.loads((run / "manifest.json").read_text())["files"]
        assert {"config.json", "model.safetensors", "unknown.json", "tokenizer/medians.npy"} <= set(files)
        assert not [name for name in files if name.startswith(("metrics/", "predictions/", "checkpoints/"))]


def test_flipped_weights_are_refused_not_used(tiny_run, pbmc68k_path, copy_of, cli, tmp_path):
    run = copy_of(tiny_run)
    _flip_past_header(run / "model.safetensors")
    for args in (
        ["predict", run, pbmc68k_path, "--out", tmp_path / "out.h5ad", "--no-umap"],
        ["evaluate", run],
    ):
        line = error_line(*cli(*args))
        assert "model.safetensors changed" in line and str(run) in line and "good copy" in line
    assert not (tmp_path / "out.h5ad").exists()
    with pytest.raises(RunDirError, match="model.safetensors changed"):
        cellformer.load(run)


def test_damaged_token_store_is_refused(prepared, logreg_run, copy_of, cli):
    data = copy_of(prepared)
    ids = np.memmap(data / "tokens" / "ids.bin", dtype=np.int32, mode="r+")
    ids[5] = 10**6  # same size, an id outside the vocabulary
    ids.flush()
    del ids
    line = error_line(*cli("evaluate", logreg_run, "--prepared", data))
    assert "tokens/ids.bin changed" in line and "prepare it again" in line
    with pytest.raises(RunDirError, match="tokens/ids.bin changed"):
        cellformer.train(data, out=data.parent / "run")


def test_evaluate_records_what_compare_checks(logreg_run, prepared, copy_of, cli, tmp_path):
    run = copy_of(logreg_run)
    metrics = cellformer.evaluate(run)
    config = json.loads((run / "config.json").read_text())
    assert metrics["data"]["prepared_fingerprint"] == config["data_fingerprint"]
    assert len(metrics["data"]["cells_sha256"]) == 64
    # predictions changed after evaluation: compare refuses them
    path = run / "predictions" / "test.npz"
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["logits"] = arrays["logits"][:, ::-1].copy()
    np.savez_compressed(path, **arrays)
    line = error_line(*cli("compare", run, "--out", tmp_path / "report"))
    assert "predictions/test.npz changed" in line and f"cellformer evaluate {run}" in line


def test_directories_without_a_manifest_are_refused(prepared, logreg_run, copy_of, cli, pbmc68k_path):
    """Another cellformer version (or an interrupted write) left no manifest: one line, what to do."""
    data, run = copy_of(prepared, manifest=False), copy_of(logreg_run, manifest=False)
    with pytest.raises(RunDirError, match=r"prepared dataset .* has no manifest.json: .*another cellformer"):
        PreparedData(data)
    line = error_line(*cli("evaluate", logreg_run, "--prepared", data))
    assert f"{data} has no manifest.json" in line and "prepare it again" in line
    line = error_line(*cli("baseline", data, "--method", "logreg", "--out", data.parent / "lr"))
    assert "has no manifest.json" in line and not (data.parent / "lr").exists()
    for args in (["evaluate", run], ["predict", run, pbmc68k_path, "--out", data.parent / "o.h5ad"]):
        line = error_line(*cli(*args))
        assert f"run directory {run} has no manifest.json" in line and "train it again" in line
    assert not (data.parent / "o.h5ad").exists()


def test_run_without_a_status_is_refused(logreg_run, copy_of):
    """config.json records whether training finished; another version's run without it is refused."""
    run = copy_of(logreg_run, manifest=False)
    config = json.loads((run / "config.json").read_text())
    del config["status"]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunDirError, match="has no manifest.json"):  # not taken for a run still training
        cellformer.load(run)
    rerecord(run)  # its own manifest (another version's), not damage
    with pytest.raises(RunDirError, match=r"records no status .*another cellformer version.*train it"):
        cellformer.load(run)


def test_moving_the_prepared_path_in_config_is_allowed(logreg_run, prepared, copy_of, tmp_path):
    run = copy_of(logreg_run)
    moved = tmp_path / "moved_prepared"
    shutil.copytree(prepared, moved)
    config = json.loads((run / "config.json").read_text())
    config["prepared"]["path"] = str(moved)
    (run / "config.json").write_text(json.dumps(config))
    assert cellformer.evaluate(run)["data"]["prepared"] == str(moved.resolve())
    config["seed"] = 7  # any other change is a modification
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunDirError, match="config.json changed"):
        cellformer.evaluate(run)


def test_resume_refuses_a_modified_run(tiny_run, prepared, copy_of):
    run = copy_of(tiny_run)
    (run / "vocab.json").write_text((run / "vocab.json").read_text().replace('"<MASK>"', '"<MASKED>"'))
    with pytest.raises(RunDirError, match="vocab.json changed"):
        cellformer.train(prepared, out=run, resume=True)
    # a run still training has no manifest yet: its copies are compared with the prepared dataset's
    (run / "manifest.json").unlink()
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "status": "training"}))
    with pytest.raises(RunDirError, match="cannot resume .*vocab.json differs from"):
        cellformer.train(prepared, out=run, resume=True)


def test_hashes_are_remembered_until_the_file_changes(tmp_path, monkeypatch):
    from cellformer import integrity

    monkeypatch.setenv("CELLFORMER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(integrity, "PERSISTENT_MIN_BYTES", 10)
    path = tmp_path / "big.bin"
    path.write_bytes(b"a" * 100)
    first = integrity.sha256(path)
    integrity._MEMORY.clear()
    assert json.loads((tmp_path / "cache" / "sha256.json").read_text())  # kept across processes
    assert integrity.sha256(path) == first
    path.write_bytes(b"b" * 100)  # same size: the new mtime / ctime make it hashed again
    assert integrity.sha256(path) != first


def test_prepared_data_verifies_on_open(prepared, copy_of):
    data = copy_of(prepared)
    (data / "tokenizer" / "medians.npy").unlink()
    with pytest.raises(RunDirError, match="tokenizer/medians.npy is missing"):
        PreparedData(data)
