"""bench/unknown.py's TPR / FPR at validation FPR targets and its tables (no training: synthetic scores)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))  # the script imports bench/labelled_data.py
    try:
        spec = importlib.util.spec_from_file_location("bench_unknown", BENCH / "unknown.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_thresholds_at_validation_quantiles_reproduce_their_fpr(bench):
    rng = np.random.default_rng(0)
    val = rng.normal(size=1000)
    known, new = rng.normal(size=500), rng.normal(2.0, 1.0, size=200)
    scores = np.r_[new, known]
    withheld = np.r_[np.ones(200, bool), np.zeros(500, bool)]
    empty = np.zeros(700, bool)
    empty[-1] = True  # a known cell without model genes: flagged whatever its score
    rates = bench.rates_at_targets(scores, withheld, empty, val)
    assert list(rates) == ["0.01", "0.05", "0.09", "0.1"]
    for target, r in zip(bench.FPR_TARGETS, rates.values(), strict=True):
        assert r["threshold"] == pytest.approx(np.quantile(val, 1 - target))
        assert abs(r["val_fpr"] - target) <= 1 / len(val) + 1e-12
        flagged = (scores > r["threshold"]) | empty
        assert r["tpr"] == flagged[withheld].mean() and r["fpr"] == flagged[~withheld].mean()
        assert abs(r["fpr"] - target) < 0.04  # known query cells: same distribution as validation
    tprs = [r["tpr"] for r in rates.values()]
    assert tprs == sorted(tprs) and tprs[0] < tprs[-1]  # a looser target catches more


def _record(bench, dataset, withheld, model, auroc, with_targets=True):
    entry = {"auroc": auroc, "tpr": 0.5, "fpr": 0.05, "val_fpr": 0.05}
    if with_targets:
        entry["at_fpr"] = {
            f"{t:g}": {"threshold": 1.0, "tpr": 0.4 + t, "fpr": t, "val_fpr": t} for t in bench.FPR_TARGETS
        }
    return {
        "dataset": dataset,
        "withheld": withheld,
        "model": model,
        "settings": [],
        "quantile": 0.95,
        "n_withheld": 30,
        "n_known": 100,
        "result": {
            "shipped": "mahalanobis",
            "shipped_space": "expression",
            "shipped_tpr": 0.5,
            "shipped_fpr": 0.05,
            "known_macro_f1": 0.8,
            "scores": {"mahalanobis": entry, "energy": {**entry, "auroc": 0.5}},
        },
    }


def test_markdown_shows_the_rates_at_each_target_per_type_and_per_dataset(bench):
    records = [
        _record(bench, "bladder", "a", "transformer", 0.9),
        _record(bench, "pbmc68k", "b", "transformer", 0.7),
        _record(bench, "bladder", "a", "logreg", 0.8),
    ]
    text = bench.markdown(records)
    assert "TPR @1% | FPR @1% | TPR @5% | FPR @5% | TPR @9% | FPR @9% | TPR @10% | FPR @10%" in text
    assert (
        "| bladder | a | transformer | 0.900 | 0.410 | 0.010 | 0.450 | 0.050 | 0.490 | 0.090 | 0.500 | 0.100 |"
        in text
    )
    assert "| transformer | **all** | 2 | 0.800 | 0.800 | 0.410 | 0.010 |" in text
    rows = bench.dataset_averages(records, "transformer")
    assert [r["dataset"] for r in rows] == ["bladder", "pbmc68k", "all"]
    assert rows[-1]["at_fpr"]["0.1"] == pytest.approx({"tpr": 0.5, "fpr": 0.1})
    assert any("@10%: 0.500/0.100" in line for line in bench.summary(records, 0.95))


def test_records_without_target_rates_still_tabulate_and_resume_keys_match(bench, tmp_path):
    old = _record(bench, "bladder", "a", "transformer", 0.9, with_targets=False)
    del old["quantile"]  # records written before the FPR targets
    text = bench.markdown([old])
    assert "AUROC mahal" in text and "TPR @1%" not in text
    path = tmp_path / "r.jsonl"
    import json

    path.write_text(json.dumps(old) + "\n" + '{"dataset": "cut sho')  # a last line cut by a kill
    (read,) = bench.read_records(path)
    assert bench.record_key(read) == ("bladder", "a", "transformer", (), 0.95)


def test_expression_only_mode_records_the_expression_scores_without_a_model(bench, tmp_path, capsys):
    """``--expression-only`` on pbmc68k withholding CD56+ NK (31 cells): no training, a few seconds."""
    import json

    from cellformer.calibration import scores as module
    from cellformer.calibration.unknown import DEFAULT_METHOD, method_for

    if not (bench.DATA / "pbmc68k_reduced.h5ad").exists():
        pytest.skip(f"{bench.DATA / 'pbmc68k_reduced.h5ad'} is not there")
    record_path = tmp_path / "runs.jsonl"
    argv = ["--expression-only", "--datasets", "pbmc68k", "--types", "CD56+ NK", "--record", str(record_path)]
    argv += ["--work", str(tmp_path / "work")]
    assert bench.main(argv) == 0
    assert module.EXPRESSION_HVG == 10_000  # the 2,000-HVG fit patched it only inside its block
    (record,) = bench.read_records(record_path)
    assert (record["mode"], record["model"], record["dataset"], record["withheld"]) == (
        "expression-only",
        "none",
        "pbmc68k",
        "CD56+ NK",
    )
    result = record["result"]
    assert result["default"] == method_for(DEFAULT_METHOD, None) == "holdout_mahalanobis_density"
    assert result["known_macro_f1"] is None  # needs a model
    assert set(result["scores"]) == {
        "holdout_mahalanobis_density",
        "mahalanobis",
        "density",
        "mahalanobis_density",
        "mahalanobis@hvg2000",
    }
    assert record["n_withheld"] == 31 and record["n_known"] > 50
    assert result["n_val"] > 50
    # pbmc68k has 765 genes: both spaces hold every expressed one, so the two mahalanobis agree
    assert result["n_hvg"]["hvg2000"] == result["n_hvg"]["hvg10000"] <= result["n_genes"] == 765
    assert result["scores"]["mahalanobis@hvg2000"] == result["scores"]["mahalanobis"]
    for entry in result["scores"].values():
        assert 0.0 <= entry["auroc"] <= 1.0 and 0.0 <= entry["tpr"] <= 1.0
        assert entry["auroc"] > 0.6  # NK cells are not a copy of any training type
        # the shipped 0.91 quantile of validation scores flags ~9 % of validation cells (up to 1 / n_val)
        assert abs(entry["val_fpr"] - 0.09) <= 1.0 / result["n_val"] + 1e-9
        assert entry["at_fpr"]["0.09"]["threshold"] == pytest.approx(entry["threshold"])
        assert (
            entry["at_fpr"]["0.09"]["tpr"] == entry["tpr"] and entry["at_fpr"]["0.09"]["fpr"] == entry["fpr"]
        )
        assert entry["fpr"] < 0.25  # known query cells: near the target
        tprs = [entry["at_fpr"][t]["tpr"] for t in ("0.01", "0.05", "0.09", "0.1")]
        assert tprs == sorted(tprs)
    out = capsys.readouterr().out
    assert "known-cell macro-F1 needs" in out and "holdout_mahalanobis_density (default)" in out

    # --resume measures nothing again; the record file keeps one line; the tables take both kinds
    assert bench.main(argv + ["--resume"]) == 0
    assert "(recorded)" in capsys.readouterr().out
    assert len(record_path.read_text().splitlines()) == 1
    assert bench.record_key(record) == ("pbmc68k", "CD56+ NK", "none", (), 0.91, "expression-only")
    trained = _record(bench, "pbmc68k", "CD56+ NK", "transformer", 0.9)
    text = bench.markdown([trained, record])
    assert "| transformer | **all** |" not in text and "AUROC mahal" in text  # the trained tables, alone
    assert "| **holdout_mahalanobis_density (default)** | pbmc68k | 1 |" in text
    assert "| mahalanobis, 2000 HVGs (default before) | pbmc68k | 1 |" in text
    assert json.loads(json.dumps(record)) == record
