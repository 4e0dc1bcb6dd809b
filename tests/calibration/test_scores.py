"""The unknown scores on synthetic clusters: direction, determinism, storage, the threshold's FPR."""

from __future__ import annotations

import numpy as np
import pytest

from cellformer.calibration.scores import FEATURE_SCORES, MEMBER_SCORES, SCORES
from cellformer.calibration.unknown import UnknownDetector

MEMBERS = 2


def _heads(width=8, n_classes=3, hidden=6, seed=5):
    """Random classifier heads of ``MEMBERS`` members, each reading its ``width // MEMBERS`` columns."""
    rng = np.random.default_rng(seed)
    heads = {}
    for i in range(MEMBERS):
        heads[f"fc_weight.{i}"] = rng.normal(size=(hidden, width // MEMBERS))
        heads[f"fc_bias.{i}"] = rng.normal(size=hidden) * 0.1
        heads[f"out_weight.{i}"] = rng.normal(size=(n_classes, hidden))
        heads[f"out_bias.{i}"] = rng.normal(size=n_classes) * 0.1
    return heads


def _clusters(n=600, d=8, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    centres = rng.normal(size=(n_classes, d)) * 3
    emb = centres[y] + rng.normal(size=(n, d))
    return _logits(emb, centres), emb, y, centres


def _logits(emb, centres):
    return -((emb[:, None, :] - centres[None]) ** 2).sum(-1) / 40  # not saturated: no ties at p = 1


def _fit(method, quantile=0.95):
    logits, emb, y, _ = _clusters()
    return UnknownDetector.fit(
        (logits[:400], emb[:400], y[:400]),
        (logits[400:], emb[400:], y[400:]),
        3,
        quantile,
        method=method,
        heads=_heads(),  # read by the member scores only
    )


@pytest.mark.parametrize("method", SCORES)
def test_threshold_reproduces_its_fpr_on_validation_cells(method):
    logits, emb, y, _ = _clusters()
    for quantile in (0.95, 0.8):
        detector = _fit(method, quantile)
        assert detector.method == method and detector.fpr_target == pytest.approx(1 - quantile)
        flagged = detector.flag(logits[400:], emb[400:]).mean()
        assert abs(flagged - (1 - quantile)) <= 1 / 200 + 1e-12
        assert flagged == detector.info["val_flagged_fraction"]
        shifted = _fit(method).with_quantile(quantile)  # from the stored validation scores
        assert shifted.threshold == pytest.approx(detector.threshold)


@pytest.mark.parametrize("method", FEATURE_SCORES)
def test_distance_scores_rank_far_cells_above_known_ones(method):
    logits, emb, y, centres = _clusters()
    detector = _fit(method)
    rng = np.random.default_rng(2)  # a new type: a cluster of its own, in another direction
    far = rng.normal(size=emb.shape[1]) * 3 + rng.normal(size=(20, emb.shape[1]))
    far_logits = _logits(far, centres)
    known = detector.scores(logits[400:], emb[400:])
    new = detector.scores(far_logits, far)
    assert np.median(new) > np.quantile(known, 0.95)
    assert detector.flag(far_logits, far).mean() >= 0.9


@pytest.mark.parametrize("method", SCORES)
def test_scores_are_deterministic_and_survive_storage(method, tmp_path):
    logits, emb, _, _ = _clusters()
    first, second = _fit(method), _fit(method)
    np.testing.assert_array_equal(first.scores(logits, emb), second.scores(logits, emb))
    assert first.threshold == second.threshold
    first.save(tmp_path)
    loaded = UnknownDetector.load(tmp_path)
    assert loaded.method == method and loaded.threshold == first.threshold
    np.testing.assert_array_equal(loaded.scores(logits, emb), first.scores(logits, emb))
    np.testing.assert_array_equal(loaded.flag(logits, emb), first.flag(logits, emb))


def test_feature_scores_fall_back_to_max_probability_without_embeddings():
    logits, _, y, _ = _clusters()
    detector = UnknownDetector.fit((logits[:400], None, y[:400]), (logits[400:], None, y[400:]), 3)
    assert detector.method == "max_probability"


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        _fit("entropy")


def _counts(n=500, genes=300, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    profiles = rng.gamma(0.5, 2.0, size=(n_classes + 1, genes))  # the last one: a type never trained on
    return y, profiles, rng


def _sample(profiles, types, rng):
    import scipy.sparse as sp

    return sp.csr_matrix(rng.poisson(profiles[types] * 2).astype(np.float32))


@pytest.mark.parametrize("method", ["centroid_distance", "knn_distance", "mahalanobis", "combined"])
def test_expression_space_scores(method, tmp_path):
    y, profiles, rng = _counts()
    X = _sample(profiles, y, rng)
    new = _sample(profiles, np.full(40, 3), rng)
    logits = np.zeros((len(y), 3))
    detector = UnknownDetector.fit(
        (logits[:350], None, y[:350]),
        (logits[350:], None, y[350:]),
        3,
        space="expression",
        method=method,
        expression=(X[:350], X[350:]),
    )
    assert detector.space == "expression" and detector.needs_expression
    with pytest.raises(ValueError, match="expression coordinates"):
        detector.scores(logits[350:], None)
    val = detector.expression_features(X[350:])
    assert abs(detector.flag(logits[350:], None, val).mean() - detector.fpr_target) <= 1 / 150 + 1e-12
    far = detector.expression_features(new)
    assert detector.flag(np.zeros((40, 3)), None, far).mean() >= 0.9
    detector.save(tmp_path)
    loaded = UnknownDetector.load(tmp_path)
    np.testing.assert_array_equal(
        loaded.scores(logits[350:], None, loaded.expression_features(X[350:])),
        detector.scores(logits[350:], None, val),
    )


def test_density_is_a_local_outlier_factor_against_a_brute_force_reference():
    """``density`` = distance to the k-th nearest training cell / the mean of that distance for those k
    training cells (each measured without itself); a cell between two clusters scores above both."""
    from scipy.spatial.distance import cdist

    from cellformer.calibration.scores import fit_score, score

    _, emb, y, centres = _clusters()
    train, query = emb[:400], np.vstack([emb[400:450], (centres[0] + centres[1]) / 2])
    state, settings = fit_score("density", train, y[:400], 3)
    k = settings["k"]
    assert k == 20
    within = np.sort(cdist(train, train), axis=1)[:, k]  # column 0 is the cell itself
    to_bank = cdist(query, train)
    nearest = np.argsort(to_bank, axis=1, kind="stable")[:, :k]
    expected = np.sort(to_bank, axis=1)[:, k - 1] / within[nearest].mean(axis=1)
    got = score("density", state, settings, np.zeros((len(query), 3)), query)
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert got[-1] > np.quantile(got[:-1], 0.95)


def test_density_bank_is_a_seeded_sample_of_large_training_sets(monkeypatch):
    from cellformer.calibration import scores

    monkeypatch.setattr(scores, "DENSITY_BANK", 150)
    _, emb, y, _ = _clusters()
    state, _ = scores.fit_score("density", emb[:400], y[:400], 3)
    again, _ = scores.fit_score("density", emb[:400], y[:400], 3)
    assert state["bank"].shape == (150, emb.shape[1])
    np.testing.assert_array_equal(state["bank"], again["bank"])


def test_expression_space_is_fitted_on_a_sample_and_projected_in_chunks(
    bladder_counts_for_scores, monkeypatch
):
    """Chunked projection equals one block; the principal axes come from at most EXPRESSION_PCA_CELLS
    training cells (seeded), and the genes are the 10,000 most variable at most."""
    from cellformer.calibration import scores

    X = bladder_counts_for_scores
    state = scores.fit_expression_space(X)
    assert len(state["expression.hvg_index"]) == 10_000 < X.shape[1]
    whole = scores.expression_features(state, X[:300])
    monkeypatch.setattr(scores, "_EXPRESSION_CHUNK", 97)
    np.testing.assert_allclose(scores.expression_features(state, X[:300]), whole, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(scores, "EXPRESSION_PCA_CELLS", 250)
    sampled = scores.fit_expression_space(X)
    np.testing.assert_array_equal(sampled["expression.scaler_mean"], state["expression.scaler_mean"])
    assert not np.array_equal(sampled["expression.pca_components"], state["expression.pca_components"])
    np.testing.assert_array_equal(
        scores.fit_expression_space(X)["expression.pca_components"], sampled["expression.pca_components"]
    )


def test_member_probabilities_are_the_ensemble_members_own():
    """The detector's copy of each member's head gives that member's probabilities as the network does."""
    import torch

    from cellformer.calibration.scores import member_probabilities
    from cellformer.config import ModelConfig
    from cellformer.model.transformer import TransformerEnsemble

    torch.manual_seed(0)
    config = ModelConfig(
        n_layers=1, members=3, d_model=16, n_heads=2, head_hidden=8, vocab_size=40, n_classes=5
    )
    model = TransformerEnsemble(config).eval()
    ids = torch.randint(4, 40, (7, 12))
    ids[:, 0] = 1  # <CLS>
    with torch.no_grad():
        _, embeddings = model(ids)
        expected = np.stack([torch.softmax(member(ids)[0], -1).numpy() for member in model.members])
    got = member_probabilities(embeddings.numpy(), model.head_weights(), 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_disagreement_is_zero_when_members_agree_and_grows_with_their_disagreement():
    from cellformer.calibration.scores import mutual_information

    confident = np.array([[0.9, 0.05, 0.05]])
    agree = np.stack([confident, confident])
    split = np.stack([confident, confident[:, ::-1]])
    uncertain = np.full((2, 1, 3), 1 / 3)  # unsure, but the members agree: no disagreement
    np.testing.assert_allclose(mutual_information(agree), 0.0, atol=1e-12)
    np.testing.assert_allclose(mutual_information(uncertain), 0.0, atol=1e-12)
    assert 0.4 < mutual_information(split)[0] <= np.log(2)  # two members: at most log 2


@pytest.mark.parametrize("method", MEMBER_SCORES)
def test_member_scores_fall_back_without_the_members_heads(method):
    logits, emb, y, _ = _clusters()
    detector = UnknownDetector.fit(
        (logits[:400], emb[:400], y[:400]), (logits[400:], emb[400:], y[400:]), 3, method=method
    )
    fallback = {"disagreement": "max_probability"}.get(method, method.removesuffix("_disagreement"))
    assert fallback in ("max_probability", "mahalanobis_density", "holdout_mahalanobis_density")
    assert detector.method == fallback
    fitted = _fit(method)
    with pytest.raises(ValueError, match="needs (the model's )?embeddings"):
        fitted.scores(logits[400:], None)


def test_holdout_weights_reproduce_the_score_from_its_parts():
    """score = sum_p weight_p * (part - validation median) / validation IQR - offset; the representation
    parts' weighted sum sits at 0 on the validation cells' median; deterministic."""
    from cellformer.calibration.scores import _part_state, fit_score, score

    logits, emb, y, _ = _clusters()
    val = (logits[400:], emb[400:], None)
    state, settings = fit_score("holdout_mahalanobis_density", emb[:400], y[:400], 3, val=val, y_val=y[400:])
    again = fit_score("holdout_mahalanobis_density", emb[:400], y[:400], 3, val=val, y_val=y[400:])[1]
    assert settings == again
    assert settings["holdout"]["classes_held_out"] == 3
    assert all(c > 0 for c in settings["holdout"]["coefficients"].values())
    parts = settings["parts"]
    expected = -settings["offset"] + sum(
        settings["weights"][p]
        * (score(p, _part_state(state, p), parts[p], logits[400:], emb[400:]) - parts[p]["median"])
        / parts[p]["iqr"]
        for p in ("mahalanobis", "density")
    )
    got = score("holdout_mahalanobis_density", state, settings, logits[400:], emb[400:])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert abs(np.median(got)) < 1e-9
    with pytest.raises(ValueError, match="validation cells' labels"):
        fit_score("holdout_mahalanobis_density", emb[:400], y[:400], 3, val=val)


def test_holdout_weights_are_equal_without_a_class_to_hold_out(monkeypatch):
    from cellformer.calibration import scores

    _, emb, y, _ = _clusters()
    monkeypatch.setattr(scores, "HOLDOUT_MIN_CELLS", 1_000)  # every class is smaller
    coefficients, held_out = scores.holdout_coefficients(
        emb[:400], y[:400], emb[400:], y[400:], 3, ["mahalanobis", "density"]
    )
    assert held_out == 0 and coefficients == {"mahalanobis": 1.0, "density": 1.0}


def test_holdout_weights_follow_the_data(pbmc68k_path, kidney_path):
    """On real data the held-out classes choose different parts (docs/unknown.md, round 7): on pbmc68k a
    withheld type is far from every class mean (Mahalanobis), on kidney it lies off the training cells'
    local density (the local outlier factor)."""
    import anndata as ad
    import scipy.sparse as sp

    from cellformer.calibration import scores

    ratios = {}
    for name, path in (("pbmc68k", pbmc68k_path), ("kidney", kidney_path)):
        adata = ad.read_h5ad(path)
        if name == "kidney":  # 3,000 of its 5,685 cells: enough, and quick
            adata = adata[np.sort(np.random.default_rng(0).choice(adata.n_obs, 3000, replace=False))]
        X = sp.csr_matrix(adata.X, dtype=np.float32)
        if name == "pbmc68k":  # stored log-normalized: back to count-like values
            np.expm1(X.data, out=X.data)
        y = adata.obs["cell_type"].astype("category").cat.codes.to_numpy()
        train = np.arange(adata.n_obs) % 5 != 0
        space = scores.fit_expression_space(X[train])
        features = [scores.expression_features(space, X[rows]) for rows in (train, ~train)]
        coefficients, held_out = scores.holdout_coefficients(
            features[0], y[train], features[1], y[~train], int(y.max()) + 1, ["mahalanobis", "density"]
        )
        assert held_out >= 8
        ratios[name] = coefficients["mahalanobis"] / coefficients["density"]
    assert ratios["pbmc68k"] > 2 and ratios["kidney"] < 1, ratios
