"""Fixtures: the bladder data prepared once, and the three baselines fitted on it once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def baseline_prepared(bladder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mouse_bladder_2100 prepared with the defaults (split 70/15/15, rank tokens of the top 128 genes)."""
    from cellformer.preparation.prepare import prepare

    out = tmp_path_factory.mktemp("baseline_prepared") / "bladder"
    prepare(bladder_path, out=out, max_genes=128)
    return out


@pytest.fixture(scope="session")
def baseline_runs(baseline_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"logreg": run_dir, "knn": run_dir, "mlp": run_dir}`` fitted on :func:`baseline_prepared`."""
    import cellformer

    base = tmp_path_factory.mktemp("baseline_runs")
    return {
        m: cellformer.baseline(baseline_prepared, method=m, out=base / m) for m in ("logreg", "knn", "mlp")
    }
