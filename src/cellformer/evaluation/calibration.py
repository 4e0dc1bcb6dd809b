"""Temperature scaling (Guo et al. 2017): one scalar ``T`` that divides the logits.

``T`` minimises the negative log-likelihood of held-out labelled cells (the validation split). It
never changes the predicted class, only how confident the probabilities are: ``T > 1`` softens an
over-confident model. The fit is a bounded scalar search over ``log T``, deterministic.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from cellformer.evaluation.metrics import expected_calibration_error, softmax

T_MIN, T_MAX = 0.05, 20.0


def negative_log_likelihood(logits: np.ndarray, y_true: np.ndarray, temperature: float = 1.0) -> float:
    """Mean ``-log p(y_true)`` of ``softmax(logits / temperature)``; every ``y_true`` must be a class id."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y_true = np.asarray(y_true, dtype=np.int64)
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(y_true)), y_true]))


@dataclasses.dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and how it was obtained."""

    temperature: float
    n_cells: int  # labelled cells it was fitted on (unseen labels excluded)
    nll_before: float
    nll_after: float

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for ``logits``."""
        return softmax(logits, self.temperature)


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> TemperatureFit:
    """Fit ``T`` on labelled cells; cells whose label id is not a class (unseen) are left out.

    With no usable cell the identity ``T = 1`` is returned (``n_cells = 0``).
    """
    logits = np.asarray(logits, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    keep = (y_true >= 0) & (y_true < logits.shape[1])
    logits, y_true = logits[keep], y_true[keep]
    if not len(y_true):
        return TemperatureFit(1.0, 0, float("nan"), float("nan"))
    before = negative_log_likelihood(logits, y_true)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, y_true, float(np.exp(log_t))),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    temperature = float(np.exp(result.x))
    after = negative_log_likelihood(logits, y_true, temperature)
    if after > before:  # the search never does worse than no scaling
        temperature, after = 1.0, before
    return TemperatureFit(temperature, int(len(y_true)), before, after)


def calibration_summary(
    fit: TemperatureFit, logits: np.ndarray, y_true: np.ndarray, fitted_on: str
) -> dict[str, float | int | str]:
    """ECE on ``(logits, y_true)`` before and after applying ``fit``, JSON-ready."""
    return {
        "method": "temperature scaling",
        "temperature": fit.temperature,
        "fitted_on": fitted_on,
        "n_fit_cells": fit.n_cells,
        "nll_fit_before": fit.nll_before,
        "nll_fit_after": fit.nll_after,
        "ece_before": expected_calibration_error(softmax(logits), y_true),
        "ece_after": expected_calibration_error(fit.apply(logits), y_true),
    }
