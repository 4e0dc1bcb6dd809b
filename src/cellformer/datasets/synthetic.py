"""A synthetic single-cell time course with a known, branching lineage.

Cells are sampled at ``n_times`` time points (``obs['time']`` = 0, 1, ...). Every cell at time
``t > 0`` descends from one *sampled* cell at ``t - 1`` (``obs['parent']``), whose latent log-expression
it inherits and moves towards the program of its own state. States form a tree::

    progenitor ─┬─ early_A ─┬─ A1
                │           └─ A2
                └─ early_B ─── B

A state's children become reachable from ``branch_times`` on; a cell whose parent could branch does so
with probability ``p_switch`` and otherwise keeps the parent's state. Which child it takes is set by a
hidden *fate bias* (one for A/B, one for A1/A2) the lineage inherits (with noise) from the first time point; the bias also nudges a
few "priming" genes, so the ancestor's profile carries information about the fate.

Counts are Poisson draws from ``library size x softmax(latent)``; the true ancestor's counts are in
``layers['X_previous']`` (all zero at the first time point), so the derived (kNN) and true previous
profiles can be compared. Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

STATES = {  # state -> parent state
    "progenitor": None,
    "early_A": "progenitor",
    "early_B": "progenitor",
    "A1": "early_A",
    "A2": "early_A",
    "B": "early_B",
}


def synthetic_timecourse(
    *,
    n_times: int = 6,
    cells_per_time: int = 150,
    n_genes: int = 400,
    seed: int = 0,
    branch_times: tuple[int, int] = (2, 4),
    p_switch: float = 0.6,
    drift: float = 0.5,
    noise: float = 0.25,
    marker_genes: int = 12,
    marker_effect: float = 1.5,
    library_size: float = 3000.0,
    dtype: type = np.int32,
):
    """Simulate the time course; returns an AnnData of counts (CSR).

    Parameters
    ----------
    n_times, cells_per_time
        Time points and cells sampled at each.
    n_genes
        Genes (``gene_0`` ...).
    branch_times
        First time point at which (progenitor → early_*) and (early_* → A1/A2/B) transitions happen.
    p_switch
        Chance per step that a cell whose state can branch does so.
    drift, noise
        Step towards the state program, and per-step latent Gaussian noise.
    marker_genes, marker_effect
        Up-regulated genes per state (on top of its parent's) and their log-fold change.

    Returns
    -------
    AnnData with ``X`` (counts), ``layers['X_previous']`` (the parent's counts),
    ``obs['time']`` (int), ``obs['cell_type']`` (state, categorical), ``obs['lineage']``
    (A / B / undecided), ``obs['parent']`` (parent's obs name, '' at time 0), ``obs['fate_bias']`` (A vs B) and ``obs['subfate_bias']`` (A1 vs A2).
    """
    import anndata as ad

    if n_times < 2 or cells_per_time < 1:
        raise ValueError("need n_times >= 2 and cells_per_time >= 1")
    rng = np.random.default_rng(seed)
    names = list(STATES)
    base = rng.normal(0.0, 1.0, n_genes)
    programs: dict[str, np.ndarray] = {}
    gene_order = rng.permutation(n_genes)
    for i, state in enumerate(names):
        parent = STATES[state]
        program = base.copy() if parent is None else programs[parent].copy()
        markers = gene_order[i * marker_genes : (i + 1) * marker_genes]
        program[markers] += marker_effect
        programs[state] = program
    first_priming = len(names) * marker_genes
    priming = [
        gene_order[first_priming + j * marker_genes : first_priming + (j + 1) * marker_genes] for j in (0, 1)
    ]
    children = {s: [c for c, p in STATES.items() if p == s] for s in names}
    level = {"progenitor": 0, "early_A": 1, "early_B": 1, "A1": 2, "A2": 2, "B": 2}

    blocks, prev_blocks, obs_parts = [], [], []
    prev_counts = prev_latent = prev_state = prev_bias = prev_names = None
    for t in range(n_times):
        n = cells_per_time
        cell_names = np.array([f"t{t}_c{i}" for i in range(n)], dtype=object)
        if t == 0:
            parents = np.full(n, -1)
            bias = rng.uniform(-1, 1, (n, 2))  # column 0 < 0 favours A over B; column 1 < 0 A1 over A2
            state = np.array(["progenitor"] * n, dtype=object)
            latent = programs["progenitor"][None, :] + rng.normal(0, noise, (n, n_genes))
        else:
            parents = rng.integers(0, len(prev_state), n)
            bias = np.clip(prev_bias[parents] + rng.normal(0, 0.1, (n, 2)), -1, 1)
            state = prev_state[parents].copy()
            switch = rng.random(n) < p_switch
            for i in np.flatnonzero(switch):
                options = children[state[i]]
                if not options or t < branch_times[min(level[state[i]], len(branch_times) - 1)]:
                    continue
                if len(options) == 1:
                    state[i] = options[0]
                else:  # first child favoured by negative bias
                    p_first = 1.0 / (1.0 + np.exp(4.0 * bias[i, level[state[i]]]))
                    state[i] = options[0] if rng.random() < p_first else options[1]
            target = np.stack([programs[s] for s in state])
            latent = prev_latent[parents] + drift * (target - prev_latent[parents])
            latent += rng.normal(0, noise, (n, n_genes))
        latent_obs = latent.copy()
        for j in (0, 1):  # fate priming, visible in every cell
            latent_obs[:, priming[j]] += 0.8 * bias[:, j : j + 1]
        proba = np.exp(latent_obs - latent_obs.max(axis=1, keepdims=True))
        proba /= proba.sum(axis=1, keepdims=True)
        sizes = library_size * rng.lognormal(0.0, 0.3, n)
        counts = sp.csr_matrix(rng.poisson(proba * sizes[:, None]).astype(dtype))
        blocks.append(counts)
        prev_blocks.append(sp.csr_matrix((n, n_genes), dtype=dtype) if t == 0 else prev_counts[parents])
        lineage = np.where(
            np.isin(state, ["early_A", "A1", "A2"]),
            "A",
            np.where(np.isin(state, ["early_B", "B"]), "B", "undecided"),
        )
        obs_parts.append(
            pd.DataFrame(
                {
                    "time": t,
                    "cell_type": state,
                    "lineage": lineage,
                    "parent": "" if t == 0 else prev_names[parents],
                    "fate_bias": bias[:, 0],
                    "subfate_bias": bias[:, 1],
                },
                index=cell_names,
            )
        )
        prev_counts, prev_latent, prev_state, prev_bias, prev_names = counts, latent, state, bias, cell_names
    obs = pd.concat(obs_parts)
    obs["cell_type"] = pd.Categorical(obs["cell_type"], categories=names)
    obs["lineage"] = pd.Categorical(obs["lineage"])
    obs["time"] = obs["time"].astype(np.int64)
    adata = ad.AnnData(
        X=sp.vstack(blocks, format="csr"),
        obs=obs,
        var=pd.DataFrame(index=[f"gene_{j}" for j in range(n_genes)]),
        layers={"X_previous": sp.vstack(prev_blocks, format="csr")},
    )
    adata.uns["synthetic_timecourse"] = {
        "seed": seed,
        "n_times": n_times,
        "cells_per_time": cells_per_time,
        "branch_times": list(branch_times),
        "p_switch": p_switch,
        "drift": drift,
        "noise": noise,
        "marker_genes": marker_genes,
        "marker_effect": marker_effect,
        "library_size": library_size,
        "lineage": {k: ("" if v is None else v) for k, v in STATES.items()},
    }
    return adata
