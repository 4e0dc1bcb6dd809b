"""Run directories: load any trained model (transformer or baseline) behind one interface.

Every run directory has a ``config.json`` whose ``kind`` says which loader rebuilds it
(:data:`cellformer.kinds.LOADERS`: ``"transformer"`` from ``cellformer.train``, or a baseline method).
Loaded models implement :class:`TrainedModel`, so the rest of cellformer never asks which kind it has.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cellformer.atomic import read_json
from cellformer.errors import RunDirError
from cellformer.integrity import MANIFEST, verify
from cellformer.kinds import LOADERS

if TYPE_CHECKING:
    import anndata as ad

    from cellformer.preparation.prepared import PreparedData

# columns of a run's ``log.csv``: one row per epoch (transformer, MLP baseline)
LOG_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "train_macro_f1",
    "train_masked_gene_loss",
    "val_loss",
    "val_acc",
    "val_macro_f1",
    "lr",
    "seconds",
)


@dataclasses.dataclass
class Predictions:
    """Raw model outputs for a set of cells, in the order they were given."""

    logits: np.ndarray  # (n_cells, n_classes) float32; softmax gives probabilities
    embeddings: np.ndarray | None = None  # (n_cells, d) e.g. the <CLS> embedding; None if the model has none
    rows: np.ndarray | None = None  # store rows the cells came from (prepared splits), else None


class TrainedModel(Protocol):
    """What ``evaluate``, ``compare``, calibration and ``predict`` need from any trained run; each kind
    answers for itself (``TransformerRun``, ``BaselineRun``), so no caller switches on ``kind``."""

    run_dir: Path
    kind: str  # config.json's "kind" (cellformer.kinds.KINDS)
    config: dict[str, Any]
    classes: list[str]
    is_baseline: bool  # a simple reference model (cellformer.baseline), not the transformer
    embedding_name: str  # what its embedding is ("<CLS>", "hidden layer", ...): predict's params
    unknown_space: str  # what the unknown-cell detector measures: "expression", "embedding" or "logits"
    # an ensemble's members' classifier heads, for the unknown score's disagreement part; None otherwise
    member_heads: dict[str, np.ndarray] | None

    @classmethod
    def load(cls, run_dir: Path) -> TrainedModel:
        """Rebuild the run from its directory alone (``cellformer.load`` checks it first)."""

    def predict_split(self, prepared: PreparedData, split: str) -> Predictions:
        """Outputs for the cells of a split of the prepared dataset the run was trained on."""

    def predict_adata(self, adata: ad.AnnData, *, batch_size: int = 256) -> Predictions:
        """Outputs for new cells (genes aligned to the model's own vocabulary / features)."""

    def outputs(
        self,
        adata: ad.AnnData,
        *,
        batch_size: int = 256,
        log: bool = True,
        progress: bool = True,
        **options: Any,
    ) -> tuple[Predictions, dict[str, Any], np.ndarray]:
        """Outputs for new cells, the gene-overlap report, and which cells express no model gene
        (``log``: log the overlap; ``progress``: progress bars; ``options``: how to read ``adata``)."""


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a run directory, with a clear error when it is not one."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not run_dir.is_dir():
        if run_dir.exists():
            raise RunDirError(
                f"{run_dir} is a file, not a run directory; pass a directory made by `cellformer train` or "
                "`cellformer baseline`"
            )
        raise RunDirError(f"run directory {run_dir} does not exist")
    if not config_path.exists():
        raise RunDirError(
            f"{run_dir} is not a cellformer run directory (no config.json); "
            "pass a directory made by `cellformer train` or `cellformer baseline`"
        )
    try:
        config = read_json(config_path)
    except (OSError, ValueError):
        raise RunDirError(
            f"{config_path} is unreadable or truncated (not valid JSON): the run directory is damaged; "
            "copy it again from a good copy or make the run again"
        ) from None
    if not isinstance(config, dict) or config.get("kind") not in LOADERS:
        raise RunDirError(
            f"{config_path} has unknown kind {config.get('kind') if isinstance(config, dict) else None!r}; expected one of {', '.join(LOADERS)}"
        )
    return config


def load(run_dir: str | Path, *, unfinished: bool = False) -> TrainedModel:
    """Rebuild a trained model from its run directory alone (transformer or baseline).

    A finished run's files are first checked against its ``manifest.json`` (:mod:`cellformer.integrity`).
    A run that is not finished (still training, or diverged) is refused unless ``unfinished``.
    """
    verify_run(run_dir)
    config = read_run_config(run_dir)
    if not unfinished:
        check_finished(run_dir, config)
    module, attr = LOADERS[config["kind"]].split(":")
    return getattr(importlib.import_module(module), attr).load(Path(run_dir))


def run_is_finished(config: dict[str, Any]) -> bool:
    """A run that should have a manifest: every run but a transformer run still training or diverged
    (one without a ``status`` too: it is then refused for lacking its manifest)."""
    return config.get("status") not in ("training", "diverged")


def verify_run(run_dir: str | Path) -> dict[str, Any] | None:
    """:func:`~cellformer.integrity.verify` a finished run (a run still training, or diverged, has no
    manifest and is not checked)."""
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST).exists():  # before reading config.json: it may be the damaged file
        return verify(run_dir, "run")
    config = read_run_config(run_dir)
    return verify(run_dir, "run") if run_is_finished(config) else None


def check_finished(run_dir: str | Path, config: dict[str, Any]) -> None:
    """Refuse a run whose training diverged or has not finished (``config.json`` ``status``)."""
    status = config.get("status")
    if status == "finished":
        return
    if status is None:
        raise RunDirError(
            f"run {run_dir} records no status in its config.json: it was made by another cellformer "
            "version or its config.json was edited; train it again"
        )
    if status == "diverged":
        info = (config.get("result") or {}).get("diverged") or {}
        what = (
            f": {info['what']} became NaN or infinite in epoch {info.get('epoch')}"
            if info.get("what")
            else ""
        )
        lr = float(info.get("lr", (config.get("train") or {}).get("lr", float("nan"))))
        raise RunDirError(
            f"run {run_dir} has no usable model: its training diverged{what}; train again with a lower "
            f"learning rate (--lr, it was {lr:g}) into a new --out"
        )
    from cellformer.config import RunInput

    prepared = RunInput.of(config).path or "PREPARED_DIR"
    raise RunDirError(
        f"run {run_dir} is in state {status!r}: training did not finish; continue it with "
        f"`cellformer train {prepared} --out {run_dir} --resume`"
    )
