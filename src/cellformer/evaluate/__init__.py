"""Evaluation of trained runs: metrics on arrays, calibration, plots, and the comparison report.

``cellformer.evaluate(run_dir, split="test")`` evaluates one run (:mod:`cellformer.evaluate.api`);
``cellformer.compare(run_dirs, out=...)`` writes the report (:mod:`cellformer.evaluate.report`).

Importing this package makes Python set ``cellformer.evaluate`` to the package itself, which would
hide the function of the same name in the public API. The package is therefore callable and forwards
to :func:`cellformer.evaluate.api.evaluate`, so ``cellformer.evaluate(...)`` works whatever was
imported first.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from cellformer.evaluate.api import evaluate

        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
