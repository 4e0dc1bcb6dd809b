"""A fitted baseline loaded from its run directory: expression in, logits and embeddings out.

Everything needed is in the run directory (no pickles): ``features.json`` (the model's genes = the
vocabulary, its HVGs, normalization constants), ``model.safetensors`` (HVG index, scaler, PCA and the
method's arrays) and ``config.json`` (method and hyper-parameters).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from cellformer.atomic import read_json
from cellformer.baselines.models import METHODS
from cellformer.errors import RunDirError
from cellformer.runs import Predictions, read_run_config
from cellformer.tokenize import features as feat

if TYPE_CHECKING:
    import anndata as ad

    from cellformer.preparation.prepared import PreparedData

logger = logging.getLogger(__name__)

FEATURE_ARRAYS = ("hvg_index", "scaler_mean", "scaler_std", "pca_components", "pca_mean")


class BaselineRun:
    """A ``logreg`` / ``knn`` / ``mlp`` baseline (implements :class:`cellformer.runs.TrainedModel`); what
    differs between the methods is asked of its :class:`~cellformer.baselines.models.Method`."""

    is_baseline = True
    member_heads = None  # one model: no ensemble members' heads (cellformer.calibration.scores)

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        classes: list[str],
        features: dict[str, Any],
        arrays: dict[str, np.ndarray],
    ) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        self.kind = config["kind"]
        self.method = METHODS[self.kind]  # how it predicts, its embedding and unknown-cell space
        self.classes = classes
        self.features = features
        self.genes: list[str] = list(features["genes"])
        self.arrays = arrays
        self.scaler = feat.Standardizer(
            arrays["scaler_mean"], arrays["scaler_std"], float(features["max_value"])
        )

    @classmethod
    def load(cls, run_dir: str | Path) -> BaselineRun:
        from safetensors.numpy import load_file

        run_dir = Path(run_dir)
        config = read_run_config(run_dir)
        if config["kind"] not in METHODS:
            raise RunDirError(f"{run_dir} is a {config['kind']!r} run, not a baseline ({', '.join(METHODS)})")
        for name in ("classes.json", "features.json", "model.safetensors"):
            if not (run_dir / name).exists():
                raise RunDirError(
                    f"baseline run directory {run_dir} is incomplete: {name} is missing; run `cellformer baseline` again"
                )
        try:
            arrays = load_file(str(run_dir / "model.safetensors"))
        except Exception as exc:  # safetensors' own error types (truncated, not safetensors)
            raise RunDirError(
                f"cannot read {run_dir / 'model.safetensors'}: the file is damaged or truncated "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); copy the run "
                "again from a good copy or run `cellformer baseline` again"
            ) from None
        missing = [name for name in FEATURE_ARRAYS if name not in arrays]
        if missing:
            raise RunDirError(
                f"{run_dir}/model.safetensors lacks {', '.join(missing)}; run `cellformer baseline` again"
            )
        return cls(
            run_dir,
            config,
            list(read_json(run_dir / "classes.json")["classes"]),
            read_json(run_dir / "features.json"),
            arrays,
        )

    @property
    def embedding_name(self) -> str:
        """What its embedding is (``predict``'s ``params['embedding']``)."""
        return self.method.embedding

    @property
    def unknown_space(self) -> str:
        """What the unknown-cell detector measures for this method."""
        return self.method.unknown_space

    # -- prediction ----------------------------------------------------------------------------
    def transform(self, X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Standardized HVG features and PCA coordinates of count-like ``X`` aligned to :attr:`genes`."""
        X_log = feat.log_normalize(X, float(self.features["target_sum"]))
        Z = self.scaler.transform(X_log[:, self.arrays["hvg_index"]])
        P = feat.project(Z, self.arrays["pca_components"], self.arrays["pca_mean"])
        return Z, P

    def predict_matrix(
        self, X: sp.csr_matrix, *, batch_size: int = 4096, progress: bool = False
    ) -> Predictions:
        """Outputs for count-like expression ``X`` whose columns are :attr:`genes` (in order)."""
        from tqdm.auto import tqdm

        X = sp.csr_matrix(X)
        if X.shape[1] != len(self.genes):
            raise ValueError(f"matrix has {X.shape[1]} genes, the baseline expects {len(self.genes)}")
        n_classes = len(self.classes)
        logits, embeddings = [], []
        starts = range(0, X.shape[0], batch_size)
        for start in tqdm(starts, desc="predicting", unit="batch", disable=not progress or None, leave=False):
            Z, P = self.transform(X[start : start + batch_size])
            lg, emb = self.method.forward(self.arrays, self.config["model"], Z, P, n_classes)
            logits.append(lg)
            embeddings.append(emb)
        if not logits:
            width = self.method.width(self.arrays)
            return Predictions(np.zeros((0, n_classes), np.float32), np.zeros((0, width), np.float32))
        return Predictions(np.concatenate(logits), np.concatenate(embeddings).astype(np.float32))

    def predict_split(self, prepared: PreparedData, split: str) -> Predictions:
        from cellformer.preparation.expression import PreparedExpression

        self._check_prepared(prepared)
        rows = prepared.split_rows(split)
        X = PreparedExpression(prepared).read(rows)
        out = self.predict_matrix(X)
        out.rows = rows
        return out

    def predict_adata(self, adata: ad.AnnData, *, batch_size: int = 256, **options: Any) -> Predictions:
        """Outputs for new cells; ``options`` override ``layer``, ``gene_key``, ``min_overlap``."""
        X, _ = self.align(adata, **options)
        return self.predict_matrix(X, batch_size=max(batch_size, 1), progress=True)

    def outputs(
        self,
        adata: ad.AnnData,
        *,
        batch_size: int = 256,
        log: bool = True,
        progress: bool = True,
        **options: Any,
    ) -> tuple[Predictions, dict[str, Any], np.ndarray]:
        """Outputs for new cells (aligned to the run's genes), the gene-overlap report, and which cells
        express none of them (:class:`~cellformer.runs.TrainedModel`); batches of at least 1,024 cells."""
        from cellformer.preparation.new_cells import log_overlap

        X, overlap = self.align(adata, **options)
        if log:
            log_overlap(overlap)
        no_genes = np.asarray(abs(X).sum(axis=1)).ravel() == 0
        outputs = self.predict_matrix(X, batch_size=max(batch_size, 1024), progress=progress)
        return outputs, overlap, np.asarray(no_genes, dtype=bool)

    def align(self, adata: ad.AnnData, **options: Any) -> tuple[sp.csr_matrix, dict[str, Any]]:
        from cellformer.data.align import aligned_matrix

        return aligned_matrix(adata, self.genes, **{**self.input_options(), **options})

    def input_options(self) -> dict[str, Any]:
        """How the training data was read (layer, gene_key, normalized input, minimum gene overlap)."""
        from cellformer.data.align import training_input_options

        return training_input_options(self.config)

    def _check_prepared(self, prepared: PreparedData) -> None:
        if list(prepared.classes) != self.classes or prepared.genes != self.genes:
            raise RunDirError(
                f"prepared dataset {prepared.path} is not the one baseline {self.run_dir} was fitted on "
                f"(classes or genes differ; it was {self.config.get('prepared', {}).get('path')})"
            )
