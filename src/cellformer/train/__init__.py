"""Training: the LightningModule, data loading, the Trainer set-up and the run directory.

``cellformer.train(prepared_dir, out=...)`` calls :func:`cellformer.train.api.train`: this package
is callable so that name works whether or not its submodules were imported first.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from cellformer.train.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
