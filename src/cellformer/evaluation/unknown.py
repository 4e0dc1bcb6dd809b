"""The unknown score on an evaluated split, for ``evaluate``'s metrics and ``compare``'s report.

``evaluate`` records, with the detector stored in the run (the one ``predict`` uses): the score, its
threshold and false-positive target, the share of the split's cells flagged (cells of training types
and, where the split holds them, of types unseen in training, separately) and a few quantiles of the
score. ``compare`` shows one cell per run from it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cellformer.preparation.prepared import PreparedData
    from cellformer.runs import Predictions, TrainedModel

logger = logging.getLogger(__name__)

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def split_summary(
    model: TrainedModel, prepared: PreparedData, rows: np.ndarray, preds: Predictions, labels: np.ndarray
) -> dict[str, Any] | None:
    """The stored detector's flags and scores on ``rows`` (``preds`` in the same order; ``labels``
    their class indices, ``>= n_classes`` for unseen types); ``None`` for a run without a detector."""
    from cellformer.calibration.unknown import UnknownDetector
    from cellformer.errors import InputError, RunDirError

    detector = UnknownDetector.load(model.run_dir)
    if detector is None or not detector.calibrated:
        return None
    expression = None
    if detector.needs_expression:
        from cellformer.preparation.expression import PreparedExpression

        try:
            expression = detector.expression_features(PreparedExpression(prepared).read(rows))
        except (InputError, RunDirError, OSError) as exc:
            logger.warning("no unknown-score summary for %s: %s", model.run_dir, exc)
            return None
    scores = np.asarray(detector.scores(preds.logits, preds.embeddings, expression), np.float64)
    flagged = scores > detector.threshold
    labels = np.asarray(labels)
    known = (labels >= 0) & (labels < len(model.classes))
    unseen = labels >= len(model.classes)
    return {
        "score": detector.method,
        "space": detector.space,
        "threshold": float(detector.threshold),
        "fpr_target": float(detector.fpr_target),
        "flagged_fraction": float(flagged.mean()) if len(flagged) else 0.0,
        "flagged_known_fraction": float(flagged[known].mean()) if known.any() else None,
        "flagged_unseen_fraction": float(flagged[unseen].mean()) if unseen.any() else None,
        "n_unseen": int(unseen.sum()),
        "quantiles": {
            f"q{round(100 * q):02d}": float(v)
            for q, v in zip(
                QUANTILES, np.quantile(scores, QUANTILES) if len(scores) else [np.nan] * 5, strict=True
            )
        },
    }


def report_cell(metrics: dict[str, Any]) -> str:
    """One table cell: flagged share (known / unseen types) and the score's median [5%, 95%]."""
    u = metrics.get("unknown")
    if not u:
        return "—"
    q = u["quantiles"]
    text = f"{100 * u['flagged_fraction']:.1f}%"
    if u.get("flagged_unseen_fraction") is not None:
        text += (
            f" (known {100 * u['flagged_known_fraction']:.1f}%, unseen types "
            f"{100 * u['flagged_unseen_fraction']:.1f}% of {u['n_unseen']})"
        )
    return (
        f"{text}; {u['score']} median {q['q50']:.3g} [{q['q05']:.3g}, {q['q95']:.3g}], "
        f"threshold {u['threshold']:.3g} ({100 * u['fpr_target']:.0f}% of validation cells)"
    )
