"""The synthetic branching time course, and the ancestor mapping on it."""

from __future__ import annotations

import numpy as np
import pytest

from cellformer.datasets.synthetic import STATES, synthetic_timecourse
from cellformer.timecourse.mapping import AncestorMapping


@pytest.fixture(scope="module")
def course():
    return synthetic_timecourse(n_times=6, cells_per_time=120, n_genes=300, seed=3)


def test_same_seed_same_data_other_seed_other_data(course):
    again = synthetic_timecourse(n_times=6, cells_per_time=120, n_genes=300, seed=3)
    assert (course.X != again.X).nnz == 0
    assert course.obs.equals(again.obs)
    other = synthetic_timecourse(n_times=6, cells_per_time=120, n_genes=300, seed=4)
    assert (course.X != other.X).nnz > 0


def test_lineage_structure(course):
    obs = course.obs
    assert obs["time"].tolist() == np.repeat(np.arange(6), 120).tolist()
    assert course.X.dtype == np.int32 and course.X.min() >= 0
    assert set(obs.loc[obs["time"] < 2, "cell_type"]) == {"progenitor"}
    assert set(obs.loc[obs["time"] == 5, "cell_type"]) >= {"A1", "A2", "B"}
    # every later cell has a parent at t - 1 whose state is its own state or that state's parent
    later = obs[obs["time"] > 0]
    parents = obs.loc[later["parent"]]
    assert (parents["time"].to_numpy() == later["time"].to_numpy() - 1).all()
    for child, parent in zip(later["cell_type"], parents["cell_type"], strict=True):
        assert parent == child or STATES[child] == parent
    # the true ancestor's counts are in X_previous (zero at the first time point)
    previous = course.layers["X_previous"]
    assert previous[:120].nnz == 0
    rows = course.obs_names.get_indexer(later["parent"])
    assert (previous[120:] != course.X[rows]).nnz == 0


def test_kNN_ancestors_recover_the_true_parents_type(course):
    rng = np.random.default_rng(0)
    train = rng.random(course.n_obs) < 0.7
    t = course.obs["time"].to_numpy()
    mapping = AncestorMapping(k=10, n_components=20, n_hvg=200).fit([course.X[train]], t[train])
    index, _ = mapping.neighbours(course.X, t)
    types = course.obs["cell_type"].astype(str).to_numpy()
    train_types = types[train]
    parent_type = course.obs.loc[course.obs["parent"].where(t > 0, course.obs_names[0]), "cell_type"]
    parent_type = parent_type.astype(str).to_numpy()
    hits = []
    for i in np.flatnonzero(t > 0):
        values, counts = np.unique(train_types[index[i][index[i] >= 0]], return_counts=True)
        hits.append(values[counts.argmax()] == parent_type[i])
    # the simulated types overlap (cells switch gradually), so not 100 %; chance is about 1/3
    assert np.mean(hits) > 0.75
