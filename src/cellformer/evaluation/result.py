"""What the comparison report is made of: an evaluated run (:class:`RunResult`) and the small views of it that
both the analysis (``report.py``) and the renderings (``render.py``) use, so neither imports the other."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from cellformer.calibration.temperature import softmax
from cellformer.kinds import BASELINES

SMALL_CLASS = 10  # classes with fewer test cells get a warning: their F1 is very uncertain


@dataclasses.dataclass
class RunResult:
    """An evaluated run, as the report needs it (labelled cells only)."""

    name: str
    run_dir: Path
    kind: str
    metrics: dict[str, Any]  # metrics/{split}.json
    y_true: np.ndarray  # (n_cells,) label ids, unseen labels >= n_classes
    logits: np.ndarray  # (n_cells, n_classes)
    plots: dict[str, Path]  # plot name -> PNG in the run directory

    @property
    def y_pred(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def is_baseline(self) -> bool:
        return self.kind in BASELINES


def ece(value: float) -> str:
    """An expected calibration error as the report shows it everywhere: a fraction (0 is perfect)."""
    return f"{value:.3f}"


def ece_used(r: RunResult) -> float:
    """The ECE of the probabilities the run hands out: after its fitted temperature.

    ``cellformer predict`` applies the temperature fitted on the validation split (``T = 1``, so the
    same as before, when there was none to fit on); ``ece_after`` is measured with that temperature.
    """
    return r.metrics["calibration"]["ece_after"]


def scaling_hurt(r: RunResult) -> bool:
    """True when temperature scaling made the run's ECE on the compared split worse."""
    cal = r.metrics["calibration"]
    return cal["ece_after"] > cal["ece_before"] + 5e-4


def slug(name: str) -> str:
    """A file-name-safe version of a run name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def calibrated_proba(result: RunResult) -> np.ndarray:
    """The run's probabilities after its fitted temperature."""
    return softmax(result.logits, result.metrics["calibration"]["temperature"])
