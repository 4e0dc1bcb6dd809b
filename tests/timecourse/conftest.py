"""Fixtures for the time-course tests: a small synthetic course on disk and an in-process CLI."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def course_adata():
    from cellformer.datasets.synthetic import synthetic_timecourse

    return synthetic_timecourse(n_times=5, cells_per_time=60, n_genes=120, seed=11)


@pytest.fixture(scope="session")
def course_path(course_adata, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("course") / "course.h5ad"
    course_adata.write_h5ad(path)
    return path
