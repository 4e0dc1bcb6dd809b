"""Unknown-cell scores: how unlike every training type a cell is (higher = less like any of them).

Each score is fitted on the *training* cells' outputs of a run (the logits and the representation the
detector measures: the model's embedding, or for a linear model its logits) and is a pure,
deterministic function of a cell's outputs afterwards:

- ``centroid_distance``: distance of the L2-normalized representation to the nearest training-class
  centroid, in units of that class's spread (median distance of its training cells to the centroid).
- ``mahalanobis``: ``min_c sqrt((x - mu_c)^T P (x - mu_c))`` with class means ``mu_c`` and one shared
  precision ``P`` (Ledoit-Wolf shrunk covariance of the class-centred training representations).
- ``knn_distance``: Euclidean distance of the L2-normalized representation to its ``k``-th nearest
  L2-normalized training representation (``k = 10``; fewer when there are fewer training cells).
- ``energy``: ``-logsumexp(logits)`` (the free energy at temperature 1).
- ``max_probability``: ``1 -`` the calibrated maximum probability (what CellTypist-style tools threshold).
- ``density``: a local outlier factor: the distance of the representation to its ``k``-th nearest training
  cell (``k = 20``), divided by the mean of the same distance of those ``k`` training cells to their own
  ``k``-th neighbours (a cell in a sparse region of a broad type is not penalised for it).
- ``combined``: the mean of ``mahalanobis`` and ``knn_distance``, each centred on its validation median
  and divided by its validation inter-quartile range (so neither dominates by its units).
- ``mahalanobis_density``: the same mean of ``mahalanobis`` and ``density`` (docs/unknown.md, round 2).
- ``disagreement``: for an ensemble of transformers, the mutual information of its members' predictions,
  ``H(mean_i p_i) - mean_i H(p_i)``: high where the members disagree, however confident their mean. Each
  member's probabilities ``p_i`` come from its classifier head (copied into the detector at calibration)
  applied to its slice of the embedding.
- ``mahalanobis_density_disagreement``: the same mean of ``mahalanobis``, ``density`` (of the
  representation) and ``disagreement`` (of the embedding) (the default of rounds 4-6, docs/unknown.md).
- ``holdout_mahalanobis_density``: ``mahalanobis`` and ``density`` weighted by how well each separates a
  class the score has not seen: each training class in turn is held out, both parts are fitted on the
  other classes, and a logistic regression on the parts' (validation-scaled) values separates the
  held-out class's training cells from the other classes' validation cells; its coefficients are the
  weights (docs/unknown.md, round 7). Only training and validation cells are used.
- ``holdout_mahalanobis_density_disagreement``: ``holdout_mahalanobis_density`` (on its validation
  median / IQR scale) weighted 0.8, and ``disagreement`` 0.2; **the default** for ensembles (round 7).
  Without members' heads (one transformer, a baseline) a detector falls back to
  ``holdout_mahalanobis_density``.

A fitted score is ``(method, state, settings)``: ``state`` holds arrays (stored in
``unknown.safetensors``), ``settings`` small JSON values. :mod:`cellformer.calibration.unknown` thresholds it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cellformer.calibration.temperature import softmax

SCORES = (
    "centroid_distance",
    "mahalanobis",
    "knn_distance",
    "density",
    "energy",
    "max_probability",
    "combined",
    "mahalanobis_density",
    "disagreement",
    "mahalanobis_density_disagreement",
    "holdout_mahalanobis_density",
    "holdout_mahalanobis_density_disagreement",
)
# the scores measuring a representation (the others read the logits, or the members' heads)
FEATURE_SCORES = (
    "centroid_distance",
    "mahalanobis",
    "knn_distance",
    "density",
    "combined",
    "mahalanobis_density",
    "mahalanobis_density_disagreement",
    "holdout_mahalanobis_density",
    "holdout_mahalanobis_density_disagreement",
)
# the scores that need an ensemble's members' classifier heads (``heads``) and the model's embeddings
MEMBER_SCORES = (
    "disagreement",
    "mahalanobis_density_disagreement",
    "holdout_mahalanobis_density_disagreement",
)
# the scores averaging others, each part on its validation median / IQR scale
COMBINED_PARTS = {
    "combined": ("mahalanobis", "knn_distance"),
    "mahalanobis_density": ("mahalanobis", "density"),
    "mahalanobis_density_disagreement": ("mahalanobis", "density", "disagreement"),
    "holdout_mahalanobis_density": ("mahalanobis", "density"),
    "holdout_mahalanobis_density_disagreement": ("mahalanobis", "density", "disagreement"),
}
# the combinations whose representation parts are weighted by held-out classes (the others: equal weights)
HOLDOUT_SCORES = ("holdout_mahalanobis_density", "holdout_mahalanobis_density_disagreement")
# the weight of the representation parts against the members' disagreement (docs/unknown.md, round 7)
HOLDOUT_SHARE = 0.8
HOLDOUT_MIN_CELLS = 10  # a training class is held out when it has at least this many cells
HOLDOUT_BANK = 5_000  # other classes' training cells the parts are fitted on while a class is held out
HOLDOUT_CELLS = 1_000  # cells of each held-out class, and of the other classes' validation cells, scored
KNN_K = 10
DENSITY_K = 20
DENSITY_BANK = 50_000  # training cells kept as the density score's neighbours (a seeded sample beyond)
_CHUNK = 1024  # query cells per distance block

DESCRIPTIONS = {
    "centroid_distance": "distance of the L2-normalized {space} to the nearest training-class centroid / "
    "that class's median training distance",
    "mahalanobis": "Mahalanobis distance of the {space} to the nearest training-class mean "
    "(one shared Ledoit-Wolf covariance of the training cells)",
    "knn_distance": "distance of the L2-normalized {space} to its k-th nearest L2-normalized training cell",
    "energy": "-logsumexp(logits), the free energy of the logits",
    "max_probability": "1 - calibrated max probability",
    "density": "distance of the {space} to its 20th nearest training cell / the mean of that distance for "
    "those training cells (a local outlier factor)",
    "combined": "mean of the Mahalanobis and k-th-neighbour distances, each as (score - validation median) "
    "/ validation IQR",
    "mahalanobis_density": "mean of the Mahalanobis distance to the nearest training-class mean (shared "
    "Ledoit-Wolf covariance) and the local outlier factor of the {space} (20 neighbours), each as "
    "(score - validation median) / validation IQR",
    "disagreement": "mutual information of the ensemble members' predictions (their disagreement)",
    "mahalanobis_density_disagreement": "mean of the Mahalanobis distance to the nearest training-class "
    "mean (shared Ledoit-Wolf covariance) and the local outlier factor (20 neighbours) of the {space}, and "
    "the ensemble members' disagreement (mutual information of their predictions), each as (score - "
    "validation median) / validation IQR",
    "holdout_mahalanobis_density": "the Mahalanobis distance to the nearest training-class mean (shared "
    "Ledoit-Wolf covariance) and the local outlier factor (20 neighbours) of the {space}, each as (score - "
    "validation median) / validation IQR, weighted by how well each separates a held-out training class",
    "holdout_mahalanobis_density_disagreement": "0.8 x the Mahalanobis distance and the local outlier "
    "factor (20 neighbours) of the {space} weighted by how well each separates a held-out training class, "
    "+ 0.2 x the ensemble members' disagreement (mutual information of their predictions), each on its "
    "validation median / IQR scale",
}


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# -- fitting -------------------------------------------------------------------------------------
def fit_score(
    method: str,
    train_features: np.ndarray | None,
    y_train: np.ndarray,
    n_classes: int,
    *,
    val: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None = None,
    temperature: float = 1.0,
    heads: dict[str, np.ndarray] | None = None,
    y_val: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(state, settings)`` of ``method`` from the training cells' representation and labels.

    ``val`` (validation ``(logits, features, embeddings)``) is needed by the combinations only (their
    normalization), ``y_val`` (the validation cells' labels) by the :data:`HOLDOUT_SCORES`; ``heads``
    (:func:`member_probabilities`' weights) by the :data:`MEMBER_SCORES`. Labels outside
    ``[0, n_classes)`` are ignored.
    """
    if method not in SCORES:
        raise ValueError(f"unknown score {method!r}; choose one of {', '.join(SCORES)}")
    if method in ("energy", "max_probability"):
        return {}, {}
    if method == "disagreement":
        if not heads:
            raise ValueError("the disagreement score needs the ensemble members' classifier heads")
        return dict(heads), {"members": len([n for n in heads if n.startswith("fc_weight.")])}
    if train_features is None:
        raise ValueError(f"the {method} score needs a representation of the training cells")
    y_train = np.asarray(y_train)
    known = (y_train >= 0) & (y_train < n_classes)
    features, y_train = np.asarray(train_features, np.float64)[known], y_train[known]
    if method == "centroid_distance":
        centroids, scales = class_centroids(unit(features), y_train, n_classes)
        return {"centroids": centroids, "scales": scales}, {}
    if method == "mahalanobis":
        return _fit_mahalanobis(features, y_train, n_classes), {}
    if method == "knn_distance":
        k = int(min(KNN_K, max(len(features), 1)))
        return {"bank": unit(features).astype(np.float32)}, {"k": k}
    if method == "density":
        return _fit_density(features)
    # a combination: the parts, then their validation median / IQR
    if val is None or val[1] is None:
        raise ValueError(f"the {method} score needs the validation cells' representation")
    val_logits, val_features, val_embeddings = val
    if method in HOLDOUT_SCORES and y_val is None:
        raise ValueError(f"the {method} score needs the validation cells' labels")
    state: dict[str, np.ndarray] = {}
    settings: dict[str, Any] = {"parts": {}}
    val_z: dict[str, np.ndarray] = {}  # each part's validation scores on its median / IQR scale
    for part in COMBINED_PARTS[method]:
        part_state, part_settings = fit_score(part, features, y_train, n_classes, heads=heads)
        values = score(part, part_state, part_settings, val_logits, val_features, temperature, val_embeddings)
        q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75]) if len(values) else (0.0, 0.0, 1.0)
        part_settings = {**part_settings, "median": float(median), "iqr": float(max(q3 - q1, 1e-12))}
        val_z[part] = (values - part_settings["median"]) / part_settings["iqr"]
        state.update({f"{part}.{name}": array for name, array in part_state.items()})
        settings["parts"][part] = part_settings
    if method in HOLDOUT_SCORES:
        settings.update(
            _holdout_weighting(features, y_train, val_features, np.asarray(y_val), n_classes, val_z)
        )
    return state, settings


def _holdout_weighting(
    features: np.ndarray,
    y_train: np.ndarray,
    val_features: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    val_z: dict[str, np.ndarray],
) -> dict[str, Any]:
    """``weights`` (per part), ``offset`` and how they were fitted, of a :data:`HOLDOUT_SCORES` combination.

    The representation parts' coefficients come from :func:`holdout_coefficients`; their weighted sum is
    put on its own validation median / IQR scale and given :data:`HOLDOUT_SHARE` of the score (all of it
    without the disagreement), the disagreement the rest: score = sum_p weight_p * z_p - offset, where
    ``val_z[p]`` holds z_p = (part - validation median) / validation IQR of the validation cells."""
    names = [p for p in val_z if p != "disagreement"]
    coefficients, n_held_out = holdout_coefficients(features, y_train, val_features, y_val, n_classes, names)
    combined = sum(coefficients[p] * val_z[p] for p in names)
    q1, median, q3 = np.quantile(combined, [0.25, 0.5, 0.75])
    iqr = float(max(q3 - q1, 1e-12))
    share = HOLDOUT_SHARE if "disagreement" in val_z else 1.0
    weights = {p: share * coefficients[p] / iqr for p in names}
    if "disagreement" in val_z:
        weights["disagreement"] = 1.0 - share
    return {
        "weights": weights,
        "offset": share * float(median) / iqr,
        "holdout": {"coefficients": coefficients, "classes_held_out": n_held_out},
    }


def holdout_coefficients(
    features: np.ndarray,
    y_train: np.ndarray,
    val_features: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    parts: list[str],
) -> tuple[dict[str, float], int]:
    """How much each representation part (``mahalanobis``, ``density``) tells a class the score has not
    seen from known cells, and how many classes that was measured on.

    Each training class with at least :data:`HOLDOUT_MIN_CELLS` cells is held out in turn: the parts are
    fitted on (at most :data:`HOLDOUT_BANK` of) the other classes' training cells and scored on (at most
    :data:`HOLDOUT_CELLS` of) the held-out class's training cells and the other classes' validation cells,
    each on those validation cells' median / IQR scale. A logistic regression separating the held-out
    cells from the validation cells (every held-out class and its validation cells weighted equally)
    gives the coefficients, clipped at 0; with no class to hold out, or no positive coefficient, the
    parts are weighted equally (1 each). Seeded samples: deterministic."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    known_val = (y_val >= 0) & (y_val < n_classes)
    val_features, y_val = np.asarray(val_features, np.float64)[known_val], y_val[known_val]
    rows, targets, sample_weights = [], [], []
    held_out = 0
    for c in range(n_classes):
        held = np.flatnonzero(y_train == c)
        others = np.flatnonzero(y_train != c)
        known = np.flatnonzero(y_val != c)
        if len(held) < HOLDOUT_MIN_CELLS or len(others) == 0 or len(known) < 2:
            continue
        held_out += 1
        bank, held, known = (
            np.sort(rng.choice(a, cap, replace=False)) if len(a) > cap else a
            for a, cap in ((others, HOLDOUT_BANK), (held, HOLDOUT_CELLS), (known, HOLDOUT_CELLS))
        )
        scaled = []
        for part in parts:
            part_state, part_settings = fit_score(part, features[bank], y_train[bank], n_classes)
            values = [
                score(part, part_state, part_settings, np.zeros((len(x), 1)), x)
                for x in (val_features[known], features[held])
            ]
            q1, median, q3 = np.quantile(values[0], [0.25, 0.5, 0.75])
            scaled.append([(v - median) / max(q3 - q1, 1e-12) for v in values])
        for group, target in ((0, 0.0), (1, 1.0)):
            block = np.column_stack([s[group] for s in scaled])
            rows.append(block)
            targets.append(np.full(len(block), target))
            sample_weights.append(np.full(len(block), 1.0 / len(block)))
    equal = {p: 1.0 for p in parts}
    if not held_out:
        return equal, 0
    weights = np.concatenate(sample_weights)
    model = LogisticRegression(C=1.0, max_iter=1000).fit(
        np.vstack(rows), np.concatenate(targets), sample_weight=weights / weights.mean()
    )
    coefficients = {p: float(max(w, 0.0)) for p, w in zip(parts, model.coef_[0], strict=True)}
    return (coefficients if sum(coefficients.values()) > 0 else equal), held_out


def _part_state(state: dict[str, np.ndarray], part: str) -> dict[str, np.ndarray]:
    """A combination's stored arrays of one part (``part.name`` -> ``name``)."""
    return {name.split(".", 1)[1]: a for name, a in state.items() if name.startswith(f"{part}.")}


def _fit_mahalanobis(features: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    from sklearn.covariance import LedoitWolf

    means = np.full((n_classes, features.shape[1]), np.nan)
    centred = np.empty_like(features)
    for c in range(n_classes):
        members = y == c
        if members.any():
            means[c] = features[members].mean(axis=0)
            centred[members] = features[members] - means[c]
    if len(features) > 1:
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    else:
        precision = np.eye(features.shape[1])
    # store a square root W (P = W W^T) so that scoring is a Euclidean distance after x @ W
    eigenvalues, vectors = np.linalg.eigh((precision + precision.T) / 2)
    whitening = vectors * np.sqrt(np.maximum(eigenvalues, 0.0))[None, :]
    return {"means": means, "whitening": whitening}


def _fit_density(features: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The neighbour bank (at most ``DENSITY_BANK`` training cells, a seeded sample beyond) and each bank
    cell's distance to its ``k``-th nearest other bank cell."""
    if len(features) > DENSITY_BANK:
        keep = np.sort(np.random.default_rng(0).choice(len(features), DENSITY_BANK, replace=False))
        features = features[keep]
    k = int(min(DENSITY_K, max(len(features) - 1, 1)))
    bank_kth, _ = nearest_neighbours(features, features, k, skip_self=True)
    return {"bank": features, "bank_kth": bank_kth}, {"k": k}


def nearest_neighbours(
    x: np.ndarray, bank: np.ndarray, k: int, skip_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each row of ``x`` to its ``k``-th nearest row of ``bank``, and the indices of its ``k``
    nearest (ascending distance); ``skip_self`` leaves out each row's nearest match (``x`` is ``bank``)."""
    bank = np.asarray(bank, np.float64)
    extra = int(skip_self)
    k = int(min(max(k, 1), len(bank) - extra))
    distance, index = np.empty(len(x)), np.empty((len(x), k), dtype=np.int64)
    b2 = (bank**2).sum(1)[None, :]
    for start in range(0, len(x), _CHUNK):
        block = np.asarray(x[start : start + _CHUNK], np.float64)
        squared = np.maximum((block**2).sum(1)[:, None] - 2 * block @ bank.T + b2, 0.0)
        nearest = np.argpartition(squared, k + extra - 1, axis=1)[:, : k + extra]
        near_squared = np.take_along_axis(squared, nearest, axis=1)
        order = np.argsort(near_squared, axis=1, kind="stable")[:, extra:]
        index[start : start + _CHUNK] = np.take_along_axis(nearest, order, axis=1)
        distance[start : start + _CHUNK] = np.sqrt(
            np.take_along_axis(near_squared, order[:, -1:], axis=1)[:, 0]
        )
    return distance, index


def class_centroids(
    embeddings: np.ndarray, labels: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean embedding and median distance of the class's cells to it (NaN when absent)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    centroids = np.full((n_classes, embeddings.shape[1]), np.nan)
    scales = np.full(n_classes, np.nan)
    for c in range(n_classes):
        members = embeddings[labels == c]
        if len(members) == 0:
            continue
        centroids[c] = members.mean(axis=0)
        distance = np.linalg.norm(members - centroids[c], axis=1)
        scales[c] = max(float(np.median(distance)), 1e-6)
    return centroids, scales


# -- scoring -------------------------------------------------------------------------------------
def score(
    method: str,
    state: dict[str, np.ndarray],
    settings: dict[str, Any],
    logits: np.ndarray,
    features: np.ndarray | None,
    temperature: float = 1.0,
    embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """The ``method`` score of each cell (float64; higher = less like any training type).

    ``embeddings``: the model's embeddings, read by the :data:`MEMBER_SCORES` only."""
    logits = np.asarray(logits, np.float64)
    if method == "disagreement":
        if embeddings is None:
            raise ValueError("the disagreement score needs the model's embeddings")
        return mutual_information(member_probabilities(embeddings, state, int(settings["members"])))
    if method == "energy":
        top = logits.max(axis=1, keepdims=True) if len(logits) else np.zeros((0, 1))
        return -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
    if method == "max_probability":
        return 1.0 - softmax(logits, temperature).max(axis=1)
    if features is None:
        raise ValueError(f"the {method} score needs the cells' representation (embeddings)")
    if method == "centroid_distance":
        return centroid_scores(unit(features), state["centroids"], state["scales"])
    if method == "mahalanobis":
        return nearest_distance(
            np.asarray(features, np.float64) @ state["whitening"], state["means"] @ state["whitening"]
        )
    if method == "knn_distance":
        return nearest_neighbours(unit(features), state["bank"], int(settings["k"]))[0]
    if method == "density":
        kth, index = nearest_neighbours(features, state["bank"], int(settings["k"]))
        return kth / np.maximum(np.asarray(state["bank_kth"], np.float64)[index].mean(axis=1), 1e-12)
    if method in COMBINED_PARTS:
        parts = settings["parts"]
        weights = settings.get("weights")  # the holdout combinations'; the others: their parts' plain mean
        total = np.zeros(len(logits))
        for part, part_settings in parts.items():
            values = score(
                part, _part_state(state, part), part_settings, logits, features, temperature, embeddings
            )
            z = (values - part_settings["median"]) / part_settings["iqr"]
            total += weights[part] * z if weights else z
        return total - settings["offset"] if weights else total / max(len(parts), 1)
    raise ValueError(f"unknown score {method!r}; choose one of {', '.join(SCORES)}")


def member_probabilities(embeddings: np.ndarray, heads: dict[str, np.ndarray], members: int) -> np.ndarray:
    """``(members, n_cells, n_classes)``: each member's class probabilities from its slice of the
    ensemble's embedding (``embeddings[:, i * C:(i + 1) * C]``), through its classifier head as the model
    computes it (:class:`cellformer.model.transformer.ClassifierHead`: linear, exact GELU, linear; no
    dropout at inference). ``heads`` holds ``fc_weight.i``, ``fc_bias.i``, ``out_weight.i``, ``out_bias.i``."""
    from scipy.special import erf

    embeddings = np.asarray(embeddings, np.float64)
    width = embeddings.shape[1] // members
    out = []
    for i in range(members):
        x = embeddings[:, i * width : (i + 1) * width]
        hidden = x @ heads[f"fc_weight.{i}"].T + heads[f"fc_bias.{i}"]
        hidden = 0.5 * hidden * (1.0 + erf(hidden / np.sqrt(2.0)))
        out.append(softmax(hidden @ heads[f"out_weight.{i}"].T + heads[f"out_bias.{i}"], 1.0))
    return np.stack(out)


def mutual_information(probabilities: np.ndarray) -> np.ndarray:
    """``H(mean_i p_i) - mean_i H(p_i)`` over the members (axis 0) of ``(members, n_cells, n_classes)``."""

    def entropy(p: np.ndarray) -> np.ndarray:
        return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=-1)

    return np.maximum(entropy(probabilities.mean(axis=0)) - entropy(probabilities).mean(axis=0), 0.0)


def centroid_scores(embeddings: np.ndarray, centroids: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``min_c ||e - centroid_c|| / scale_c`` for each row of ``embeddings`` (classes with NaN skipped)."""
    present = np.isfinite(scales)
    c, s = np.asarray(centroids, np.float64)[present], np.asarray(scales, np.float64)[present]
    e = np.asarray(embeddings, np.float64)
    squared = (e**2).sum(1)[:, None] - 2 * e @ c.T + (c**2).sum(1)[None, :]
    return (np.sqrt(np.maximum(squared, 0.0)) / s[None, :]).min(axis=1)


def nearest_distance(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of ``x`` to the nearest row of ``centres`` (NaN rows skipped)."""
    centres = np.asarray(centres, np.float64)
    centres = centres[np.isfinite(centres).all(axis=1)]
    out = np.empty(len(x))
    c2 = (centres**2).sum(1)[None, :]
    for start in range(0, len(x), _CHUNK):
        block = x[start : start + _CHUNK]
        squared = (block**2).sum(1)[:, None] - 2 * block @ centres.T + c2
        out[start : start + _CHUNK] = np.sqrt(np.maximum(squared.min(axis=1), 0.0))
    return out


# -- the expression space (a representation independent of the model) ----------------------------
EXPRESSION_PREFIX = "expression."
# every expressed gene up to 10,000 (docs/unknown.md, round 2: bladder's new types separate far better
# with its ~15,000 genes than with 2,000 HVGs; 10,000 HVGs score as well as all of them)
EXPRESSION_HVG = 10_000
EXPRESSION_PCS = 50
EXPRESSION_PCA_CELLS = 20_000  # training cells the principal axes are fitted on (a seeded sample beyond)
_EXPRESSION_CHUNK = 4096  # cells standardized and projected at a time


def fit_expression_space(X_train, *, seed: int = 0) -> dict[str, np.ndarray]:
    """The training cells' expression as detector state: log1p of counts per 10k over the (at most)
    10,000 most variable training genes, standardized, clipped, 50 principal components (fitted on at
    most 20,000 training cells, so memory does not grow with the training set)."""
    from cellformer.tokenize import features as feat

    X_log = feat.log_normalize(X_train)
    hvg = feat.training_hvg(X_log, EXPRESSION_HVG)
    scaler = feat.Standardizer.fit(X_log[:, hvg])
    rows = np.arange(X_log.shape[0])
    if len(rows) > EXPRESSION_PCA_CELLS:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), EXPRESSION_PCA_CELLS, replace=False))
    components, mean = feat.fit_pca(scaler.transform(X_log[rows][:, hvg]), EXPRESSION_PCS, seed=seed)
    arrays = {
        "hvg_index": hvg.astype(np.float64),  # stored as float32 with the rest; exact for < 2**24 genes
        "scaler_mean": scaler.mean,
        "scaler_std": scaler.std,
        "pca_components": components,
        "pca_mean": mean,
    }
    return {
        f"{EXPRESSION_PREFIX}{name}": np.asarray(a, np.float32).astype(np.float64)
        for name, a in arrays.items()
    }


def expression_features(state: dict[str, np.ndarray], X) -> np.ndarray:
    """PCA coordinates of count-like ``X`` (cells x the run's vocabulary genes) in a fitted expression space."""
    from cellformer.tokenize import features as feat

    p = EXPRESSION_PREFIX
    hvg = np.asarray(state[f"{p}hvg_index"]).astype(np.int64)
    scaler = feat.Standardizer(
        np.asarray(state[f"{p}scaler_mean"], np.float32), np.asarray(state[f"{p}scaler_std"], np.float32)
    )
    components = np.asarray(state[f"{p}pca_components"], np.float32)
    mean = np.asarray(state[f"{p}pca_mean"], np.float32)
    X_log = feat.log_normalize(X)
    out = np.empty((X_log.shape[0], components.shape[0]), np.float64)
    for start in range(0, X_log.shape[0], _EXPRESSION_CHUNK):  # dense over the genes one block at a time
        Z = scaler.transform(X_log[start : start + _EXPRESSION_CHUNK][:, hvg])
        out[start : start + _EXPRESSION_CHUNK] = feat.project(Z, components, mean)
    return out
