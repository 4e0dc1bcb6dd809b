"""Fixtures: runs trained on the bladder data with one class (class_7) withheld from training.

class_7 (102 cells) is a distinct type in this dataset; the numbered bladder clusters include
near-copies of each other (class_3 / class_4, class_2 / class_5), which no detector can tell apart
once one of them is withheld (measured while choosing the method, see ``cellformer.calibration.unknown``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

WITHHELD = "class_7"
# a transformer small enough to train in seconds on a 2-core CPU (predict plumbing, not accuracy)
TINY_TRANSFORMER = dict(
    n_layers=1,
    d_model=32,
    n_heads=2,
    ff_hidden=64,
    head_hidden=32,
    max_length=64,
    batch_size=64,
    max_epochs=1,
    lr=3e-3,
    progress_bar=False,
)


@pytest.fixture(scope="session")
def bladder(bladder_path: Path):
    import anndata as ad

    return ad.read_h5ad(bladder_path)


@pytest.fixture(scope="session")
def withheld_prepared(bladder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bladder cells except ``WITHHELD``, written to an h5ad and prepared (rank tokens, top 64 genes)."""
    from cellformer.preparation.prepare import prepare

    base = tmp_path_factory.mktemp("withheld")
    bladder[bladder.obs["cell_type"] != WITHHELD].copy().write_h5ad(base / "bladder_without_class_7.h5ad")
    prepare(base / "bladder_without_class_7.h5ad", out=base / "prepared", max_genes=64)
    return base / "prepared"


@pytest.fixture(scope="session")
def withheld_runs(withheld_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import cellformer

    base = tmp_path_factory.mktemp("withheld_runs")
    return {m: cellformer.baseline(withheld_prepared, method=m, out=base / m) for m in ("logreg", "mlp")}


@pytest.fixture(scope="session")
def withheld_transformer(withheld_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    import cellformer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cellformer.train(
            withheld_prepared, out=tmp_path_factory.mktemp("transformer") / "run", **TINY_TRANSFORMER
        )
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def pbmc68k_logreg(pbmc68k_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(prepared, logreg run)`` on pbmc68k_reduced: 700 cells, so only 104 validation cells."""
    import cellformer
    from cellformer.preparation.prepare import prepare

    base = tmp_path_factory.mktemp("pbmc68k")
    prepare(pbmc68k_path, out=base / "prepared", max_genes=128, input_normalized=True)
    return base / "prepared", cellformer.baseline(base / "prepared", method="logreg", out=base / "logreg")


@pytest.fixture(scope="session")
def no_val_logreg(
    withheld_prepared: Path, withheld_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The withheld logreg run calibrated (as ``train`` / ``baseline`` end) on a copy of its prepared
    dataset whose validation cells were moved to test: a run without validation cells."""
    import shutil

    import numpy as np

    from cellformer.calibration.run import calibrate_run
    from cellformer.integrity import write_manifest

    base = tmp_path_factory.mktemp("no_val")
    shutil.copytree(withheld_prepared, base / "prepared")
    with np.load(base / "prepared" / "splits.npz") as npz:
        splits = dict(npz)
    splits["test"] = np.sort(np.r_[splits["test"], splits["val"]])
    splits["val"] = np.zeros(0, np.int64)
    np.savez(base / "prepared" / "splits.npz", **splits)
    write_manifest(base / "prepared", "prepared")  # hand-edited: its files recorded again
    shutil.copytree(withheld_runs["logreg"], base / "logreg")
    calibrate_run(base / "logreg", base / "prepared")
    return base / "logreg"
