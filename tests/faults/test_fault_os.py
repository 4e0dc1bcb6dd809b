"""OS-level failures (disk full, permission denied, read-only location) end in one line naming the user's
path, exit 2, and leave nothing half-written behind. Faults are injected (tests may run as root, where
``chmod`` does not stop writes); one test uses a real read-only directory when not root."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from faults_helpers import PREPARE, disk_full, error_line, leftovers


def _prepare_args(small_h5ad: Path, out: Path) -> list:
    return ["prepare", small_h5ad, "--out", out, "--max-genes", PREPARE["max_genes"], "--min-genes", 10]


def test_prepare_disk_full_leaves_nothing(cli, small_h5ad, tmp_path, monkeypatch):
    import numpy as np

    import cellformer.preparation.prepare as prepare_module

    real_save = np.save

    def save(path, *args, **kwargs):
        if str(path).endswith("labels.npy"):
            raise disk_full(path)
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(prepare_module.np, "save", save)
    out = tmp_path / "prep"
    line = error_line(*cli(*_prepare_args(small_h5ad, out)))
    assert "no space left" in line and f"{out}/labels.npy" in line, line
    assert ".tmp-" not in line  # the user's path, not the temporary one
    assert not out.exists() and leftovers(tmp_path) == []


def test_prepare_permission_denied_is_one_line(cli, small_h5ad, tmp_path, monkeypatch):
    out = tmp_path / "locked" / "prep"
    if os.geteuid() == 0:  # root writes anywhere: inject the failure of the output's mkdir
        mkdir = Path.mkdir

        def denied(self, *args, **kwargs):
            if self.name.startswith(".prep.tmp-"):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", denied)
        out.parent.mkdir()
    else:
        out.parent.mkdir()
        out.parent.chmod(0o500)
    try:
        line = error_line(*cli(*_prepare_args(small_h5ad, out)))
    finally:
        out.parent.chmod(0o700)
    assert "permission denied" in line and str(out) in line and "--out" in line, line
    assert not out.exists() and leftovers(out.parent) == []


def test_predict_disk_full_removes_the_umap_plot(cli, small_run, small_h5ad, tmp_path, monkeypatch):
    import shutil

    import cellformer.prediction.files as prediction

    def quick_plot(adata, path, *, key_added="cellformer", seed=0, labels=None):  # UMAP is not under test
        Path(path).write_bytes(b"\x89PNG")
        return Path(path)

    def full(source, destination, **kwargs):  # the annotated copy starts as a copy of the input file
        raise disk_full(destination)

    monkeypatch.setattr(prediction, "plot_umap", quick_plot)
    monkeypatch.setattr(shutil, "copyfile", full)
    out = tmp_path / "annotated.h5ad"
    line = error_line(*cli("predict", small_run, small_h5ad, "--out", out))
    assert "no space left" in line and str(out) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no OUTPUT_umap.png, no temporary file


def test_predict_read_only_location(cli, small_run, small_h5ad, tmp_path, monkeypatch):
    import shutil

    def read_only(source, destination, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(destination))

    monkeypatch.setattr(shutil, "copyfile", read_only)
    out = tmp_path / "annotated.h5ad"
    line = error_line(*cli("predict", small_run, small_h5ad, "--out", out, "--no-umap"))
    assert "read-only" in line and str(out) in line and "writable" in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_predict_into_a_read_only_directory(cli, small_run, small_h5ad, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = error_line(*cli("predict", small_run, small_h5ad, "--out", locked / "a.h5ad", "--no-umap"))
    finally:
        locked.chmod(0o700)
    assert "permission denied" in line and str(locked / "a.h5ad") in line, line


def test_os_error_line_names_the_users_path():
    import argparse

    from cellformer.cli.os_errors import os_error_line, user_path

    assert user_path("/data/.prep.tmp-123/tokens/ids.bin") == "/data/prep/tokens/ids.bin"
    assert user_path(".run.old-7") == "run"
    args = argparse.Namespace(out="/data/out.h5ad")
    # h5py reports the errno only inside its message
    h5 = OSError("Can't synchronously write data (file write failed: errno = 28, error message = 'x')")
    line = os_error_line(h5, args)
    assert line.startswith("cannot write /data/out.h5ad: no space left"), line
    # fsspec copies a temporary file into place: the destination is the path to name
    moved = OSError(errno.ENOSPC, "No space left on device", "/tmp/tmpab12", None, "/data/.out.h5ad.tmp-9")
    assert os_error_line(moved, args).startswith("cannot write /data/out.h5ad: no space left")
    line = os_error_line(PermissionError(errno.EACCES, "Permission denied", "/data/in.h5ad"), args)
    assert "in.h5ad" in line, line
    line = os_error_line(
        FileExistsError(Path("/data/run")), argparse.Namespace(out="/data/run", overwrite=False)
    )
    assert line == (
        "cannot write /data/run: it was created by another process meanwhile; "
        "choose another --out or pass --overwrite"
    ), line


def test_a_forbidden_location_fails_before_any_work(cli, small_run, small_h5ad, tmp_path, monkeypatch):
    import tempfile

    import cellformer.prediction.files as prediction
    import cellformer.preparation.prepare as prepare_module

    mkstemp = tempfile.mkstemp

    def denied(*args, prefix="", **kwargs):  # only the probe of the output's folder is refused
        if ".probe-" in prefix:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "probe")
        return mkstemp(*args, prefix=prefix, **kwargs)

    def no_work(*args, **kwargs):
        raise AssertionError("the input was read before the output location was checked")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    monkeypatch.setattr(prepare_module, "_load_input", no_work)
    monkeypatch.setattr(prediction, "predict", no_work)
    out = tmp_path / "new" / "prep"
    line = error_line(*cli(*_prepare_args(small_h5ad, out)))
    assert "permission denied" in line and str(out) in line, line
    out = tmp_path / "annotated.h5ad"
    line = error_line(*cli("predict", small_run, small_h5ad, "--out", out))
    assert "permission denied" in line and str(out) in line, line
    assert list(tmp_path.iterdir()) == []  # not even the missing parent folder was made


def test_evaluate_in_a_run_directory_it_cannot_write(cli, small_run, copy_of, monkeypatch):
    import cellformer.evaluation.api as evaluation

    run = copy_of(small_run)

    def denied(path, obj):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(evaluation, "write_json", denied)
    line = error_line(*cli("evaluate", run))
    assert "permission denied" in line and "copy it somewhere" in line and "--out" not in line, line
    assert str(run / "metrics" / "test.json") in line, line
