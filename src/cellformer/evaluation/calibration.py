"""Calibration on an evaluated split: ECE before and after the run's stored temperature."""

from __future__ import annotations

import numpy as np

from cellformer.calibration.temperature import TemperatureFit, softmax
from cellformer.evaluation.metrics import expected_calibration_error


def calibration_summary(
    fit: TemperatureFit, logits: np.ndarray, y_true: np.ndarray, fitted_on: str | None
) -> dict[str, float | int | str | None]:
    """ECE on ``(logits, y_true)`` before and after applying ``fit``, JSON-ready."""
    return {
        "method": "temperature scaling",
        "temperature": fit.temperature,
        "fitted_on": fitted_on,
        "n_fit_cells": fit.n_cells,
        "nll_fit_before": fit.nll_before,
        "nll_fit_after": fit.nll_after,
        "fitted_temperature": fit.fitted,
        "decision": fit.decision,
        "ece_before": expected_calibration_error(softmax(logits), y_true),
        "ece_after": expected_calibration_error(fit.apply(logits), y_true),
    }
