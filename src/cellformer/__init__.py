"""cellformer: transformer cell-type classifiers for single-cell RNA-seq.

The public API is imported lazily so ``import cellformer`` stays light::

    import cellformer
    cellformer.prepare("cells.h5ad", out="prepared", label_key="cell_type")
    cellformer.train("prepared", out="run")
    cellformer.evaluate("run")
    adata = cellformer.predict(new_cells, "run")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "prepare": "cellformer.preparation.prepare",
    "train": "cellformer.training.api",
    "evaluate": "cellformer.evaluation.api",
    "baseline": "cellformer.baselines.api",
    "compare": "cellformer.evaluation.report",
    "predict": "cellformer.prediction",
    "load": "cellformer.runs",
    "demo": "cellformer.demo_workflow",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'cellformer' has no attribute {name!r}")
