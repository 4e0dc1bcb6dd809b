"""Temperature scaling fixes over- and under-confidence without changing any prediction."""

from __future__ import annotations

import numpy as np
import pytest

from cellformer.calibration.temperature import fit_temperature, negative_log_likelihood, softmax
from cellformer.evaluation.calibration import calibration_summary
from cellformer.evaluation.metrics import expected_calibration_error


def _well_calibrated(n: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true label distribution (labels are drawn from it)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, n_classes))
    proba = softmax(logits)
    y = (rng.random(n)[:, None] > np.cumsum(proba, axis=1)).sum(axis=1)
    return logits, y


def test_lowers_ece_of_overconfident_logits():
    logits, y = _well_calibrated(4000, 8, seed=0)
    over = 4.0 * logits  # deliberately over-confident
    fit = fit_temperature(over[:2000], y[:2000])  # "validation" half
    assert fit.temperature == pytest.approx(4.0, rel=0.15)
    held_out = over[2000:], y[2000:]
    before = expected_calibration_error(softmax(held_out[0]), held_out[1])
    after = expected_calibration_error(fit.apply(held_out[0]), held_out[1])
    assert before > 0.15 and after < 0.04 and after < before / 4
    assert fit.nll_after < fit.nll_before
    np.testing.assert_array_equal(fit.apply(over).argmax(axis=1), over.argmax(axis=1))


def test_sharpens_underconfident_logits():
    logits, y = _well_calibrated(3000, 5, seed=1)
    fit = fit_temperature(logits / 3.0, y)
    assert fit.temperature == pytest.approx(1 / 3, rel=0.15)


def test_deterministic_and_ignores_unseen_labels():
    logits, y = _well_calibrated(500, 4, seed=2)
    y_unseen = np.concatenate([y, [4, 4, 5]])  # ids >= n_classes: labels never seen in training
    logits_unseen = np.concatenate([logits, np.zeros((3, 4))])
    a, b = fit_temperature(logits_unseen, y_unseen), fit_temperature(logits, y)
    assert a.temperature == b.temperature and a.n_cells == 500


def test_no_labelled_cells_gives_identity():
    fit = fit_temperature(np.zeros((3, 2)), np.array([2, 2, 3]))
    assert fit.temperature == 1.0 and fit.n_cells == 0


def test_nll_and_summary():
    logits = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    assert negative_log_likelihood(logits, np.array([0, 1])) == pytest.approx(
        -(np.log(0.5) + np.log(0.1)) / 2
    )
    summary = calibration_summary(fit_temperature(logits, np.array([0, 1])), logits, np.array([0, 1]), "val")
    assert {"temperature", "ece_before", "ece_after", "fitted_on", "n_fit_cells"} <= set(summary)


def test_temperature_is_clipped_to_a_sane_range():
    from cellformer.calibration.temperature import T_MAX, T_MIN

    # always right with tiny margins: the NLL keeps falling as T -> 0; the fit stops at T_MIN
    y = np.arange(400) % 4
    logits = 0.01 * np.eye(4)[y]
    fit = fit_temperature(logits, y)
    assert fit.fitted == pytest.approx(T_MIN, rel=1e-4) and fit.temperature == fit.fitted
    assert fit.decision == "temperature scaling"
    # always wrong with huge margins: softening without bound; stops at T_MAX
    wrong = 50.0 * np.eye(4)[(y + 1) % 4]
    assert fit_temperature(wrong, y).temperature == pytest.approx(T_MAX, rel=1e-4)


def test_keeps_t1_when_the_fit_does_not_hold_on_held_out_halves():
    # 20 cells, one confidently wrong: the NLL fit sharpens (T 0.55), driven by which half holds the error
    y = np.arange(20) % 3
    logits = 2.0 * np.eye(3)[y]
    logits[0] = 2.0 * np.eye(3)[(y[0] + 1) % 3]
    fit = fit_temperature(logits, y)
    assert fit.fitted != 1.0 and fit.temperature == 1.0 and fit.decision.startswith("kept T=1")
    assert fit.heldout_nll_scaled >= fit.heldout_nll_identity
    # fewer than MIN_CELLS labelled cells: no scaling at all
    few = fit_temperature(4.0 * logits[:5], y[:5])
    assert few.temperature == 1.0 and "only 5 labelled" in few.decision


def test_fit_round_trips_through_json():
    import json

    from cellformer.calibration.temperature import TemperatureFit

    logits, y = _well_calibrated(300, 4, seed=4)
    fit = fit_temperature(3.0 * logits, y)
    assert TemperatureFit.from_dict(json.loads(json.dumps(fit.to_dict()))) == fit
    identity = TemperatureFit.identity("no labelled validation cells")
    again = TemperatureFit.from_dict(json.loads(json.dumps(identity.to_dict())))
    assert again.temperature == 1.0 and again.decision == identity.decision and np.isnan(again.nll_before)
