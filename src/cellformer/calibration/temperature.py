"""Softmax and temperature scaling (Guo et al. 2017): one scalar ``T`` that divides the logits.

``T`` minimises the negative log-likelihood (NLL) of held-out labelled cells (the validation split). It
never changes the predicted class, only how confident the probabilities are: ``T > 1`` softens an
over-confident model. The fit is a bounded scalar search over ``log T`` in ``[T_MIN, T_MAX]``,
deterministic.

Guard against small validation sets: the fitted ``T`` is used only if temperature scaling also helps on
cells it was not fitted on. The validation cells are split in two halves (a fixed permutation); ``T`` is
fitted on each half and scored on the other. Unless the summed held-out NLL with the fitted ``T`` is
below the held-out NLL without scaling, ``T = 1`` is kept (``TemperatureFit.decision`` says which).
With fewer than ``MIN_CELLS`` labelled cells ``T = 1`` is kept as well.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

T_MIN, T_MAX = 0.25, 10.0
MIN_CELLS = 10  # fewer labelled validation cells: no scaling
SPLIT_SEED = 0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64, numerically stable."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def negative_log_likelihood(logits: np.ndarray, y_true: np.ndarray, temperature: float = 1.0) -> float:
    """Mean ``-log p(y_true)`` of ``softmax(logits / temperature)``; every ``y_true`` must be a class id."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y_true = np.asarray(y_true, dtype=np.int64)
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(y_true)), y_true]))


@dataclasses.dataclass(frozen=True)
class TemperatureFit:
    """A temperature and how it was obtained (``temperature`` is what to apply)."""

    temperature: float
    n_cells: int  # labelled cells it was fitted on (unseen labels excluded)
    nll_before: float
    nll_after: float
    fitted: float = 1.0  # the NLL minimiser on all cells (clipped to [T_MIN, T_MAX]) before the check
    heldout_nll_identity: float = float("nan")  # 2-fold held-out NLL without scaling
    heldout_nll_scaled: float = float("nan")  # 2-fold held-out NLL with each half's fitted T
    decision: str = "temperature scaling"  # or "kept T=1: <why>"

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for ``logits``."""
        return softmax(logits, self.temperature)

    def to_dict(self) -> dict[str, float | int | str | None]:
        """JSON-ready (NaN as ``None``)."""
        return {
            k: None if isinstance(v, float) and np.isnan(v) else v
            for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, payload: dict) -> TemperatureFit:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: float("nan") if v is None else v for k, v in payload.items() if k in names})

    @classmethod
    def identity(cls, reason: str, n_cells: int = 0) -> TemperatureFit:
        """``T = 1`` (no calibration) with the reason recorded."""
        nan = float("nan")
        return cls(1.0, n_cells, nan, nan, 1.0, nan, nan, f"kept T=1: {reason}")


def _minimise(logits: np.ndarray, y_true: np.ndarray) -> float:
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, y_true, float(np.exp(log_t))),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    temperature = float(np.clip(np.exp(result.x), T_MIN, T_MAX))
    if negative_log_likelihood(logits, y_true, temperature) > negative_log_likelihood(logits, y_true):
        return 1.0  # the search never does worse than no scaling
    return temperature


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> TemperatureFit:
    """Fit ``T`` on labelled cells; cells whose label id is not a class (unseen) are left out.

    ``T = 1`` is kept (and ``decision`` says why) with fewer than ``MIN_CELLS`` cells, or when scaling
    does not lower the 2-fold held-out NLL (see the module docstring). This is the one temperature fit
    used by ``cellformer train`` / ``baseline`` (stored in the run), ``evaluate`` and ``predict``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    keep = (y_true >= 0) & (y_true < logits.shape[1])
    logits, y_true = logits[keep], y_true[keep]
    n = len(y_true)
    if n == 0:
        return TemperatureFit.identity("no labelled validation cells")
    before = negative_log_likelihood(logits, y_true)
    if n < MIN_CELLS:
        fit = TemperatureFit.identity(f"only {n} labelled validation cells (need {MIN_CELLS})", n)
        return dataclasses.replace(fit, nll_before=before, nll_after=before)
    fitted = _minimise(logits, y_true)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    halves = (order[: n // 2], order[n // 2 :])
    identity = scaled = 0.0
    for fit_on, score_on in (halves, halves[::-1]):
        t = _minimise(logits[fit_on], y_true[fit_on])
        identity += len(score_on) * negative_log_likelihood(logits[score_on], y_true[score_on])
        scaled += len(score_on) * negative_log_likelihood(logits[score_on], y_true[score_on], t)
    identity, scaled = identity / n, scaled / n
    if fitted != 1.0 and scaled < identity:
        temperature, decision = fitted, "temperature scaling"
    else:
        temperature = 1.0
        decision = (
            "kept T=1: scaling did not lower the held-out NLL of a 2-fold split of the validation cells"
            if fitted != 1.0
            else "kept T=1: the fitted temperature is 1"
        )
    after = negative_log_likelihood(logits, y_true, temperature)
    return TemperatureFit(temperature, n, before, after, fitted, identity, scaled, decision)
