"""The labelled datasets in ``../shared/data`` and the option helpers the benchmarks share.

Imported by ``bench/accuracy.py`` and ``bench/unknown.py`` (run as scripts, so ``bench/`` is on
``sys.path``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    file: str
    options: dict[str, Any]  # prepare options the file needs (how its values are stored)


DATASETS = (
    Dataset("bladder", "mouse_bladder_2100.h5ad", {}),
    Dataset("pbmc68k", "pbmc68k_reduced.h5ad", {"input_normalized": True}),
    Dataset("pancreas", "pancreas_endocrinogenesis_3696.h5ad", {}),
    Dataset("kidney", "human_kidney_5685_top2000.h5ad", {}),
    Dataset("cbmc", "cbmc_citeseq_8617_top2000.h5ad", {}),
)


def parse_value(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, true/false/null, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def digest(options: dict[str, Any]) -> str:
    """A short, stable name for a set of options (cache keys of prepared data and runs)."""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]


def _defaults(*configs: type) -> list[dict[str, Any]]:
    import dataclasses

    return [dataclasses.asdict(config()) for config in configs]


def prepared_digest(options: dict[str, Any]) -> str:
    """Cache key of a prepared dataset: its options and today's ``PrepareConfig`` defaults, so a cached
    dataset prepared under other defaults is not reused."""
    from cellformer.config import PrepareConfig

    return digest({"options": options, "defaults": _defaults(PrepareConfig)})


def run_digest(options: dict[str, Any]) -> str:
    """Cache key of a trained run: its options and today's model and training defaults, so a cached run
    trained under other defaults (e.g. before a default changed) is not reused."""
    from cellformer.config import ModelConfig, TrainConfig

    return digest({"options": options, "defaults": _defaults(ModelConfig, TrainConfig)})


def recalibrated(run: Path, prepared: Path) -> Path:
    """``run`` (a cached trained run of ``prepared``), its stored unknown detector refitted when its method,
    space or quantile is not what calibration does today, so a benchmark measures today's unknown score."""
    from cellformer.calibration.run import calibrate_run
    from cellformer.calibration.unknown import (
        DEFAULT_METHOD,
        DEFAULT_QUANTILE,
        UnknownDetector,
        method_for,
    )
    from cellformer.runs import load

    stored = UnknownDetector.load(run)
    if stored is None:  # the run has no stored detector: nothing to refresh
        return run
    trained = load(run)  # verifies and loads the run: only when there is a detector to compare
    expected = (method_for(DEFAULT_METHOD, trained.member_heads), trained.unknown_space, DEFAULT_QUANTILE)
    if (stored.method, stored.space, stored.quantile) != expected:
        calibrate_run(run, prepared)
    return run
