"""``cellformer demo``: the whole workflow on scanpy's bundled PBMC data, offline, in a few minutes.

prepare → train a small transformer → two baselines (logistic regression, kNN) → evaluate → compare.
The data is ``scanpy.datasets.pbmc68k_reduced()`` (700 PBMCs × 765 genes, shipped inside scanpy, no
download): log1p-normalized values from ``.raw``, labels ``obs['bulk_labels']`` (10 types).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from cellformer.errors import ConfigError

logger = logging.getLogger(__name__)

LABEL_KEY = "bulk_labels"
DATA_NAME = "pbmc68k_reduced.h5ad"
# the folders the demo creates inside ``out`` (``overwrite`` removes exactly these)
PARTS = (DATA_NAME, "prepared", "runs", "report")
# a 765-gene panel: cells express ~100-400 of its genes, so the 200-gene QC default would drop most
PREPARE_OPTIONS = dict(input_normalized=True, min_genes=20, min_cells=3, max_genes=256, seed=0)
TRANSFORMER_OPTIONS = dict(progress_bar=False)  # cellformer.train's defaults (docs/accuracy.md)
BASELINES = ("logreg", "knn")  # the baselines the demo compares with (of cellformer.kinds.BASELINES)


def demo(
    out: str | Path = "cellformer_demo", *, overwrite: bool = False, max_epochs: int | None = None
) -> Path:
    """Run the full workflow on the bundled PBMC data; returns the path of ``report.html``.

    Parameters
    ----------
    out
        Directory for everything the demo writes: the data as ``.h5ad``, ``prepared/``, ``runs/``
        (``transformer``, ``logreg``, ``knn``) and ``report/`` (``report.html``, ``report.md``).
    overwrite
        Replace the demo's own folders in an existing ``out`` (nothing else in it is touched).
    max_epochs
        Transformer epochs (default: ``cellformer.train``'s, with early stopping); lower it for a quicker look.
    """
    import cellformer

    out = Path(out)
    existing = [out / name for name in PARTS if (out / name).exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"demo directory {out} already has {existing[0].name}; choose another --out or pass --overwrite"
        )
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data = write_demo_data(out / DATA_NAME)
    step(1, "prepare", f"{data.name} (700 PBMCs, 765 genes, labels in obs['{LABEL_KEY}'])")
    cellformer.prepare(data, out=out / "prepared", label_key=LABEL_KEY, **PREPARE_OPTIONS)

    runs = out / "runs"
    options: dict[str, Any] = dict(TRANSFORMER_OPTIONS)
    if max_epochs is not None:
        options["max_epochs"] = max_epochs
    from cellformer.config import TrainConfig

    epochs = options.get("max_epochs", TrainConfig().max_epochs)
    step(2, "train", f"a small transformer (up to {epochs} epochs on the CPU)")
    cellformer.train(out / "prepared", out=runs / "transformer", **options)
    run_dirs = [runs / "transformer"]
    for i, method in enumerate(BASELINES, start=3):
        step(i, "baseline", method)
        run_dirs.append(cellformer.baseline(out / "prepared", method=method, out=runs / method))

    step(len(BASELINES) + 3, "evaluate", ", ".join(p.name for p in run_dirs))
    for run_dir in run_dirs:
        cellformer.evaluate(run_dir, split="test")
    step(len(BASELINES) + 4, "compare", "report")
    report = Path(cellformer.compare(run_dirs, out=out / "report"))
    logger.info("demo finished in %.0f s", time.perf_counter() - started)
    return report


def step(number: int, name: str, what: str) -> None:
    logger.info("[%d/%d] %s: %s", number, len(BASELINES) + 4, name, what)


def write_demo_data(path: Path) -> Path:
    """scanpy's bundled pbmc68k_reduced as an ``.h5ad`` with the log1p-normalized ``.raw`` values in ``X``."""
    import anndata as ad
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sp

    source = sc.datasets.pbmc68k_reduced()
    X = sp.csr_matrix(source.raw.X, dtype=np.float32)
    X.eliminate_zeros()
    adata = ad.AnnData(
        X=X, obs=source.obs[[LABEL_KEY, "louvain", "phase"]].copy(), var=source.raw.var[[]].copy()
    )
    adata.uns["source"] = "scanpy.datasets.pbmc68k_reduced(): .raw.X (log1p-normalized), obs['bulk_labels']"
    adata.write_h5ad(path)
    return path
