"""``cellformer demo``: bundled data, refusal to clobber, and (slow) the whole workflow end to end."""

from __future__ import annotations

import numpy as np
import pytest

from cellformer.errors import ConfigError


def test_demo_data_is_the_bundled_pbmc_log1p_matrix(tmp_path):
    import anndata as ad

    from cellformer.demo_workflow import LABEL_KEY, write_demo_data

    adata = ad.read_h5ad(write_demo_data(tmp_path / "pbmc.h5ad"))
    assert adata.shape == (700, 765)
    assert adata.obs[LABEL_KEY].nunique() == 10
    totals = np.expm1(adata.X.toarray()).sum(axis=1)
    assert adata.X.max() < 30 and not np.allclose(adata.X.data, np.round(adata.X.data))  # log1p values
    assert totals.min() > 0


def test_demo_refuses_to_overwrite_without_asking(tmp_path):
    import cellformer

    (tmp_path / "prepared").mkdir()
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already has prepared.*--overwrite"):
        cellformer.demo(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.slow
def test_demo_runs_end_to_end_and_prints_the_report(tmp_path, capsys):
    from cellformer.cli import main

    assert main(["demo", "--out", str(tmp_path / "demo"), "--max-epochs", "1"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    report = tmp_path / "demo" / "report" / "report.html"
    assert printed[-1] == f"report: {report}"
    html = report.read_text()
    for run in ("transformer", "logreg", "knn"):
        assert run in html
        assert (tmp_path / "demo" / "runs" / run / "metrics" / "test.json").exists()
    assert (tmp_path / "demo" / "report" / "report.md").exists()
