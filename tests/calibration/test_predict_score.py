"""``predict`` writes the unknown score next to the flag: consistent, deterministic, same in API and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cellformer
from cellformer.baselines.models import METHODS
from cellformer.calibration.unknown import DEFAULT_METHOD, DEFAULT_QUANTILE, TRANSFORMER_SPACE, method_for

WITHHELD = "CD19+ B"  # the type left out of training in conftest.py

KINDS = ("transformer", "logreg")


@pytest.mark.parametrize("kind", KINDS)
def test_score_is_written_and_the_flag_is_score_above_threshold(kind, unknown_runs, query):
    out = cellformer.predict(query, unknown_runs[kind])
    score = out.obs["cellformer_unknown_score"].to_numpy()
    flag = out.obs["cellformer_unknown"].to_numpy()
    rule = out.uns["cellformer"]["params"]["unknown"]
    assert score.dtype == np.float32 and np.isfinite(score).all()
    # the transformer (an ensemble of two) gets the default; logreg, one model, its members-free part
    expected = DEFAULT_METHOD if kind == "transformer" else method_for(DEFAULT_METHOD, None)
    assert rule["method"] == rule["score"] == expected
    assert rule["score_key"] == "cellformer_unknown_score"
    assert rule["fpr_target"] == pytest.approx(1 - DEFAULT_QUANTILE)
    assert rule["space"] == (TRANSFORMER_SPACE if kind == "transformer" else METHODS[kind].unknown_space)
    np.testing.assert_array_equal(flag, score > rule["threshold"])
    assert rule["flagged_fraction"] == pytest.approx(flag.mean())
    q = rule["score_quantiles"]
    assert list(q) == ["q05", "q25", "q50", "q75", "q95"]
    np.testing.assert_allclose(list(q.values()), np.quantile(score, [0.05, 0.25, 0.5, 0.75, 0.95]), rtol=1e-5)
    stored = json.loads((unknown_runs[kind] / "unknown.json").read_text())
    assert stored["method"] == expected and rule["threshold"] == stored["threshold"]
    # the holdout score's part weights, as fitted at calibration (the disagreement: the ensemble's only)
    parts = {"mahalanobis", "density"} | ({"disagreement"} if kind == "transformer" else set())
    assert set(rule["part_weights"]) == parts and rule["part_weights"] == stored["settings"]["weights"]
    assert stored["settings"]["holdout"]["classes_held_out"] >= 5  # pbmc68k without B: 9 classes


@pytest.mark.parametrize("kind", KINDS)
def test_score_is_deterministic(kind, unknown_runs, query):
    first = cellformer.predict(query, unknown_runs[kind]).obs["cellformer_unknown_score"].to_numpy()
    again = cellformer.predict(query, unknown_runs[kind]).obs["cellformer_unknown_score"].to_numpy()
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("kind", KINDS)
def test_threshold_reproduces_its_fpr_on_the_validation_cells(kind, unknown_runs, validation_cells):
    out = cellformer.predict(validation_cells, unknown_runs[kind])
    flagged = out.obs["cellformer_unknown"].to_numpy().mean()
    rule = out.uns["cellformer"]["params"]["unknown"]
    n = validation_cells.n_obs
    assert abs(flagged - rule["fpr_target"]) <= 1 / n + 1e-9
    assert flagged == pytest.approx(rule["val_flagged_fraction"])
    loose = cellformer.predict(validation_cells, unknown_runs[kind], unknown_quantile=0.8)
    assert abs(loose.obs["cellformer_unknown"].mean() - 0.2) <= 1 / n + 1e-9


def test_cells_without_model_genes_score_infinite(unknown_runs, query):
    import anndata as ad

    empty = query[:10].copy()
    empty.obs_names = [f"empty_{i}" for i in range(10)]
    empty.X = np.zeros(empty.shape, dtype=np.float32)
    out = cellformer.predict(ad.concat([query[:30], empty]), unknown_runs["logreg"])
    score = out.obs["cellformer_unknown_score"].to_numpy()
    assert np.isinf(score[30:]).all() and out.obs["cellformer_unknown"].to_numpy()[30:].all()
    np.testing.assert_array_equal(
        out.obs["cellformer_unknown"].to_numpy(),
        score > out.uns["cellformer"]["params"]["unknown"]["threshold"],
    )
    finite = score[np.isfinite(score)]
    q50 = out.uns["cellformer"]["params"]["unknown"]["score_quantiles"]["q50"]
    assert q50 == pytest.approx(float(np.quantile(finite, 0.5)), rel=1e-5)  # quantiles of scored cells


def test_cli_writes_the_same_score_and_prints_its_distribution(unknown_runs, query, tmp_path, capsys):
    import anndata as ad

    from cellformer.cli import main

    source, target = tmp_path / "query.h5ad", tmp_path / "annotated.h5ad"
    query.write_h5ad(source)
    assert (
        main(["predict", str(unknown_runs["transformer"]), str(source), "--out", str(target), "--no-umap"])
        == 0
    )
    printed = capsys.readouterr().out
    api = cellformer.predict(query, unknown_runs["transformer"])
    written = ad.read_h5ad(target)
    np.testing.assert_array_equal(
        written.obs["cellformer_unknown_score"].to_numpy(), api.obs["cellformer_unknown_score"].to_numpy()
    )
    np.testing.assert_array_equal(written.obs["cellformer_unknown"].to_numpy(), api.obs["cellformer_unknown"])
    n_flagged = int(api.obs["cellformer_unknown"].sum())
    assert f"{n_flagged} ({100 * n_flagged / query.n_obs:.1f}%) flagged unknown" in printed
    assert f"unknown score {DEFAULT_METHOD} (higher = less like any training type): 5% " in printed
    assert "threshold" in printed and "flags 9% of validation cells" in printed


def test_withheld_cells_are_in_the_query_not_in_training(unknown_prepared, query):
    import pandas as pd

    cells = pd.read_csv(unknown_prepared / "cells.csv.gz")
    assert WITHHELD not in set(cells["label"]) and (query.obs["cell_type"] == WITHHELD).sum() == 95


def test_transformer_run_without_its_input_files_measures_the_embedding(
    unknown_runs, unknown_prepared, monkeypatch, caplog
):
    import logging

    from cellformer.calibration.run import fit_calibration
    from cellformer.errors import InputError
    from cellformer.preparation.expression import PreparedExpression
    from cellformer.preparation.prepared import PreparedData
    from cellformer.runs import load

    def gone(self, rows):
        raise InputError("input file x.h5ad of prepared dataset p no longer exists")

    monkeypatch.setattr(PreparedExpression, "read", gone)
    with caplog.at_level(logging.WARNING, logger="cellformer.calibration.run"):
        detector = fit_calibration(load(unknown_runs["transformer"]), PreparedData(unknown_prepared))
    assert "instead of the cells' expression" in caplog.text and "no longer exists" in caplog.text
    expected = "embedding" if TRANSFORMER_SPACE == "expression" else TRANSFORMER_SPACE
    assert detector.space == expected and detector.method == DEFAULT_METHOD


def test_evaluate_records_the_score_and_compare_shows_it(unknown_runs, tmp_path):
    import shutil

    runs = {}
    for kind, run in unknown_runs.items():  # copies: evaluate writes into the run directory
        runs[kind] = tmp_path / kind
        shutil.copytree(run, runs[kind])
    import html

    from cellformer.evaluation.unknown import report_cell

    cells = []
    for kind, run in runs.items():
        metrics = cellformer.evaluate(run, split="test")
        summary = metrics["unknown"]
        cells.append(report_cell(metrics))
        expected = DEFAULT_METHOD if kind == "transformer" else method_for(DEFAULT_METHOD, None)
        assert cells[-1].startswith(f"{100 * summary['flagged_fraction']:.1f}%; {expected} median ")
        assert f"[{summary['quantiles']['q05']:.3g}, {summary['quantiles']['q95']:.3g}]" in cells[-1]
        assert summary["score"] == expected
        assert summary["fpr_target"] == pytest.approx(1 - DEFAULT_QUANTILE)
        assert summary["flagged_known_fraction"] == summary["flagged_fraction"] < 0.5
        assert summary["flagged_unseen_fraction"] is None  # the withheld type is not in the prepared data
        assert summary["quantiles"]["q05"] <= summary["quantiles"]["q50"] <= summary["quantiles"]["q95"]
    cellformer.compare(list(runs.values()), out=tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Flagged unknown; unknown score median [5%, 95%]" in text
    page = (tmp_path / "report" / "report.html").read_text()
    for cell in cells:  # each run's flagged share and the score's median [5%, 95%], in both files
        assert cell in text and html.escape(cell, quote=False) in page


@pytest.mark.parametrize("kind", KINDS)
def test_the_runs_own_training_cells_are_counted_and_said(
    kind, unknown_runs, unknown_prepared, pbmc68k, caplog
):
    """The score is calibrated for new cells; predict recognizes the run's training cells by their values
    (prepare's content hashes, stored with the run) and says how many there are and how many it flags."""
    import logging

    import anndata as ad
    import pandas as pd

    from cellformer.calibration.unknown import TRAINING_CELLS_NAME

    stored = np.load(unknown_runs[kind] / TRAINING_CELLS_NAME)
    hashes = np.load(unknown_prepared / "cell_hashes.npy")
    train_rows = np.load(unknown_prepared / "splits.npz")["train"]
    np.testing.assert_array_equal(stored, np.unique(hashes[train_rows]))
    cells = pd.read_csv(unknown_prepared / "cells.csv.gz")
    names = cells["obs_name"].astype(str).to_numpy()
    train = pbmc68k[pd.Index(pbmc68k.obs_names).get_indexer(names[train_rows[:60]])].copy()
    new = pbmc68k[pd.Index(pbmc68k.obs_names).get_indexer(names[cells["split"] == "test"])].copy()
    both = ad.concat([train, new], merge="first")
    with caplog.at_level(logging.WARNING, logger="cellformer"):
        out = cellformer.predict(both, unknown_runs[kind])
    expected = int(np.isin(hashes[np.asarray(cells["split"] == "test")], stored).sum()) + 60
    assert out.uns["cellformer"]["params"]["n_training_cells"] == expected
    assert f"{expected} of the {both.n_obs} cells are the run's own training cells" in caplog.text
    assert cellformer.predict(new, unknown_runs[kind]).uns["cellformer"]["params"]["n_training_cells"] == (
        expected - 60
    )
