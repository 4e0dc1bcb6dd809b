"""Flag cells unlike every training type, and calibrate confidence; fitted per run, stored in the run dir.

Two arrays-only pieces, fitted from a model's own outputs on the prepared dataset it was trained on:

- **Temperature** ``T`` (one scalar) minimising the validation negative log-likelihood;
  ``confidence = max softmax(logits / T)``.
- **Unknown score**: distance of a cell's L2-normalized representation to the nearest training-class
  centroid, in units of that class's own spread (the median distance of its training cells to the
  centroid). A cell far from every class's cloud is unlike every training type. The representation
  (``space``) is the model's embedding (``<CLS>``, MLP hidden layer) or, for a linear model, its logits.
  The threshold is the ``quantile`` (0.95 by default) of the validation cells' scores, so about 5 % of
  validation cells — all of known types — are flagged. Without embeddings the score is
  ``1 - confidence``, thresholded the same way.

  Chosen by measurement on mouse_bladder_2100 (each of the 16 classes withheld in turn, 5 % of known
  test cells flagged): normalized centroid distance flagged more withheld than known cells for 15/16
  classes with MLP embeddings and 13/16 with logistic-regression logits, against 8/16 for the
  calibrated max-probability and 4-8/16 for raw PCA distances. Withheld types that are near-copies
  of a training type (the numbered bladder clusters) are not separable by any of these.

Fitted once at the end of ``cellformer train`` / ``cellformer baseline`` (:mod:`cellformer.calibrate_run`)
and only read afterwards. A run without labelled validation cells records ``method = "none"``: no
calibration (``T = 1``) and no unknown flag.

Files in the run dir: ``unknown.json`` (method, threshold, quantile, temperature and how it was fitted,
validation rates) and ``unknown.safetensors`` (``centroids``, ``scales``, ``val_scores``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cellformer.atomic import atomic_path, read_json, write_json
from cellformer.evaluation.calibration import TemperatureFit, fit_temperature
from cellformer.evaluation.metrics import softmax

logger = logging.getLogger(__name__)

JSON_NAME = "unknown.json"
ARRAYS_NAME = "unknown.safetensors"
DEFAULT_QUANTILE = 0.95
SPACES = ("embedding", "logits")


@dataclasses.dataclass
class UnknownDetector:
    """Calibrated confidence and an "unlike every training type" flag for model outputs."""

    method: str  # "centroid_distance", "max_probability" or "none" (no validation cells: nothing flagged)
    threshold: float
    space: str = "embedding"  # what centroid_distance measures: "embedding" or "logits"
    temperature: float = 1.0
    quantile: float = DEFAULT_QUANTILE
    centroids: np.ndarray | None = None  # (n_classes, d); NaN rows for classes without training cells
    scales: np.ndarray | None = None  # (n_classes,)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    val_scores: np.ndarray | None = None  # validation cells' scores (any quantile's threshold)

    # -- scoring -------------------------------------------------------------------------------
    def proba(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperature)

    def scores(self, logits: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        """Higher = less like the training types."""
        if self.method == "centroid_distance":
            features = logits if self.space == "logits" else embeddings
            if features is None:
                raise ValueError("this unknown-cell detector needs embeddings")
            return centroid_scores(_unit(features), self.centroids, self.scales)
        return 1.0 - self.proba(logits).max(axis=1)

    def flag(self, logits: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        if self.method == "none":
            return np.zeros(len(logits), dtype=bool)
        return self.scores(logits, embeddings) > self.threshold

    @property
    def calibrated(self) -> bool:
        """False for a run without labelled validation cells (``T = 1``, nothing flagged)."""
        return self.method != "none"

    @property
    def temperature_fit(self) -> TemperatureFit:
        """How the temperature was fitted (runs from before the held-out check record only ``T``)."""
        stored = self.info.get("calibration")
        if stored:
            return TemperatureFit.from_dict(stored)
        nan = float("nan")
        n = int(self.info.get("n_val_cells", 0))
        note = "stored by an earlier cellformer version (no held-out check)"
        return TemperatureFit(self.temperature, n, nan, nan, self.temperature, nan, nan, note)

    def with_quantile(self, quantile: float) -> UnknownDetector:
        """The same detector with the threshold at another quantile of the validation scores."""
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        if quantile == self.quantile or self.method == "none":
            return self
        if self.val_scores is None or not len(self.val_scores):
            raise ValueError("this run stored no validation scores; only its own quantile can be used")
        threshold = float(np.quantile(self.val_scores, quantile))
        return dataclasses.replace(self, threshold=threshold, quantile=float(quantile))

    # -- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        train: tuple[np.ndarray, np.ndarray | None, np.ndarray],
        val: tuple[np.ndarray, np.ndarray | None, np.ndarray],
        n_classes: int,
        quantile: float = DEFAULT_QUANTILE,
        space: str = "embedding",
    ) -> UnknownDetector:
        """Fit from ``(logits, embeddings, labels)`` of the training and validation cells.

        Labels are class indices; cells with labels ``>= n_classes`` (unseen types) or ``< 0``
        (unlabelled) are ignored. Without labelled validation cells there is no calibration: the
        detector has ``method = "none"`` (``T = 1``, no cell flagged), and a warning says so.
        """
        train_logits, train_emb, y_train = train
        val_logits, val_emb, y_val = val
        known_val = (y_val >= 0) & (y_val < n_classes)
        val_logits, y_val = val_logits[known_val], y_val[known_val]
        val_emb = None if val_emb is None else val_emb[known_val]
        if len(y_val) == 0:
            logger.warning(
                "no labelled validation cells: the run is not calibrated (T=1) and flags no unknown cells"
            )
            fit = TemperatureFit.identity("no labelled validation cells")
            return cls(
                "none",
                float("inf"),
                "none",
                1.0,
                quantile,
                info={"n_val_cells": 0, "calibration": fit.to_dict()},
            )
        fit = fit_temperature(val_logits, y_val)  # the one fit `evaluate` and `predict` use too
        temperature = fit.temperature
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        train_features = train_logits if space == "logits" else train_emb
        if train_features is not None and (space == "logits" or val_emb is not None):
            centroids, scales = class_centroids(_unit(train_features), y_train, n_classes)
            detector = cls("centroid_distance", 0.0, space, temperature, quantile, centroids, scales)
        else:
            detector = cls("max_probability", 0.0, "logits", temperature, quantile)
        val_scores = detector.scores(val_logits, val_emb)
        detector.threshold = float(np.quantile(val_scores, quantile))
        detector.val_scores = np.sort(np.asarray(val_scores, dtype=np.float64))
        detector.info = {
            "n_val_cells": int(len(y_val)),
            "val_flagged_fraction": float(np.mean(val_scores > detector.threshold)),
            "calibration": fit.to_dict(),
        }
        return detector

    # -- storage -------------------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> None:
        from safetensors.numpy import save_file

        run_dir = Path(run_dir)
        payload = {
            "method": self.method,
            "space": self.space,
            "threshold": self.threshold if self.method != "none" else None,
            "quantile": self.quantile,
            "temperature": self.temperature,
            "description": (
                f"cellformer_unknown = score > threshold; score = distance of the L2-normalized {self.space} "
                "to the nearest training-class centroid / that class's median training distance"
                if self.method == "centroid_distance"
                else "cellformer_unknown = 1 - calibrated max probability > threshold"
                if self.method == "max_probability"
                else "no labelled validation cells: no calibration (T=1) and no unknown flag"
            ),
            "threshold_chosen_on": "validation split (quantile of known cells' scores)"
            if self.method != "none"
            else None,
            **self.info,
        }
        arrays = {}
        if self.method == "centroid_distance":
            arrays["centroids"] = np.ascontiguousarray(self.centroids, np.float32)
            arrays["scales"] = np.ascontiguousarray(self.scales, np.float32)
        if self.val_scores is not None:
            arrays["val_scores"] = np.ascontiguousarray(self.val_scores, np.float64)
        if arrays:
            with atomic_path(run_dir / ARRAYS_NAME) as tmp:
                save_file(arrays, str(tmp))
        write_json(run_dir / JSON_NAME, payload)

    @classmethod
    def load(cls, run_dir: str | Path) -> UnknownDetector | None:
        """The detector saved in ``run_dir``, or ``None`` when the run has none yet."""
        run_dir = Path(run_dir)
        if not (run_dir / JSON_NAME).exists():
            return None
        payload = read_json(run_dir / JSON_NAME)
        arrays: dict[str, np.ndarray] = {}
        if (run_dir / ARRAYS_NAME).exists():
            from safetensors.numpy import load_file

            arrays = load_file(str(run_dir / ARRAYS_NAME))
        centroids, scales = arrays.get("centroids"), arrays.get("scales")
        known = {
            "method",
            "space",
            "threshold",
            "quantile",
            "temperature",
            "description",
            "threshold_chosen_on",
        }
        threshold = payload.get("threshold")
        return cls(
            payload["method"],
            float("inf") if threshold is None else float(threshold),
            payload.get("space", "embedding"),
            float(payload["temperature"]),
            float(payload["quantile"]),
            centroids,
            scales,
            {k: v for k, v in payload.items() if k not in known},
            arrays.get("val_scores"),
        )


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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


def centroid_scores(embeddings: np.ndarray, centroids: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``min_c ||e - centroid_c|| / scale_c`` for each row of ``embeddings`` (classes with NaN skipped)."""
    present = np.isfinite(scales)
    c, s = np.asarray(centroids, np.float64)[present], np.asarray(scales, np.float64)[present]
    e = np.asarray(embeddings, np.float64)
    squared = (e**2).sum(1)[:, None] - 2 * e @ c.T + (c**2).sum(1)[None, :]
    return (np.sqrt(np.maximum(squared, 0.0)) / s[None, :]).min(axis=1)
