"""Real run directories for the evaluation tests, built in-test from the mouse bladder data.

The trained models of the other stages (transformer, baselines) are not needed: a run here is a small
scikit-learn model fitted on log1p-normalised, PCA-reduced expression of the real cells, wrapped in an
object that follows ``cellformer.runs.TrainedModel``. Its run directory holds what a real one holds for
evaluation (``config.json``, ``classes.json``, ``model.safetensors`` with the fitted arrays, a
genuine ``log.csv`` for the epoch-trained MLP, the stored calibration and ``manifest.json``). The prepared directory is the real on-disk format that
``PreparedData`` reads (labels, splits, classes, meta), with one class kept out of training so that
unseen labels are exercised.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cellformer.calibration.run import fit_calibration
from cellformer.evaluation.api import evaluate_model
from cellformer.integrity import write_manifest
from cellformer.preparation.prepared import PreparedData
from cellformer.provenance import file_fingerprint
from cellformer.runs import Predictions

WITHHELD = "class_16"  # 8 cells: kept out of training, so its test cells are "unseen"


@dataclasses.dataclass
class Bladder:
    features: np.ndarray  # (n_cells, 30) PCA of log1p-normalised HVG expression (fitted on train)
    labels: list[str]
    n_vars: int
    genes: list[str]


@pytest.fixture(scope="session")
def bladder(bladder_path: Path) -> Bladder:
    import anndata as ad
    from sklearn.decomposition import PCA

    adata = ad.read_h5ad(bladder_path)
    X = adata.X.tocsr().astype(np.float32)
    totals = np.asarray(X.sum(axis=1)).ravel()
    X = X.multiply(1e4 / np.maximum(totals, 1)[:, None]).tocsr()
    X.data = np.log1p(X.data)
    mean = np.asarray(X.mean(axis=0)).ravel()
    var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2
    hvg = np.argsort(-var)[:1000]
    dense = X[:, hvg].toarray()
    pca = PCA(n_components=30, random_state=0).fit(dense)
    return Bladder(
        pca.transform(dense).astype(np.float32),
        list(adata.obs["cell_type"].astype(str)),
        adata.n_vars,
        list(adata.var_names),
    )


def write_prepared(path: Path, data: Bladder, source: Path, seed: int) -> PreparedData:
    """A prepared directory (format 1) with stratified 70/15/15 splits; ``WITHHELD`` is test-only."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(data.labels)
    idx = np.arange(labels.size)
    train, rest = train_test_split(idx, train_size=0.7, stratify=labels, random_state=seed)
    val, test = train_test_split(rest, train_size=0.5, stratify=labels[rest], random_state=seed)
    moved = train[labels[train] == WITHHELD]
    train = train[labels[train] != WITHHELD]
    val_moved = val[labels[val] == WITHHELD]
    val = val[labels[val] != WITHHELD]
    test = np.concatenate([test, moved, val_moved])
    classes = sorted(set(labels[train]))
    unseen = sorted(set(labels) - set(classes))
    ids = {name: i for i, name in enumerate(classes + unseen)}
    (path / "tokens").mkdir(parents=True)
    np.save(path / "labels.npy", np.array([ids[x] for x in labels], dtype=np.int64))
    np.savez(path / "splits.npz", train=np.sort(train), val=np.sort(val), test=np.sort(test))
    np.save(path / "tokens" / "offsets.npy", np.zeros(labels.size + 1, dtype=np.int64))
    (path / "tokens" / "ids.bin").write_bytes(b"")
    (path / "classes.json").write_text(json.dumps({"classes": classes, "unseen": unseen}))
    (path / "vocab.json").write_text(
        json.dumps({"special": ["<PAD>", "<CLS>", "<SEP>", "<MASK>"], "genes": data.genes})
    )
    meta = {
        "format": "cellformer-prepared",
        "format_version": 1,
        "cellformer_version": "test",
        "seed": seed,
        "inputs": [
            {
                "path": str(source),
                "sha256": file_fingerprint(source),
                "n_obs": labels.size,
                "n_vars": data.n_vars,
            }
        ],
        "n_cells": int(labels.size),
        "label_key": "cell_type",
        "tokenizer": "rank",
        "has_values": False,
    }
    (path / "meta.json").write_text(json.dumps(meta))
    write_manifest(path, "prepared")
    return PreparedData(path)


@dataclasses.dataclass
class FeatureRun:
    """A ``TrainedModel`` whose logits are a fitted function of the cells' PCA features."""

    run_dir: Path
    kind: str
    config: dict[str, Any]
    classes: list[str]
    features: np.ndarray
    model: Any
    member_heads = None  # one model, not an ensemble

    @property
    def unknown_space(self) -> str:
        """As the real run of the same kind (what the unknown-cell detector measures)."""
        from cellformer.baselines.models import METHODS
        from cellformer.calibration.unknown import TRANSFORMER_SPACE

        return METHODS[self.kind].unknown_space if self.kind in METHODS else TRANSFORMER_SPACE

    def predict_split(self, prepared: PreparedData, split: str) -> Predictions:
        rows = prepared.split_rows(split)
        X = self.features[rows]
        if hasattr(self.model, "coefs_"):  # MLP: hidden layer as embedding, pre-softmax output as logits
            hidden = np.maximum(X @ self.model.coefs_[0] + self.model.intercepts_[0], 0)
            logits = hidden @ self.model.coefs_[1] + self.model.intercepts_[1]
            return Predictions(
                logits=logits.astype(np.float32), embeddings=hidden.astype(np.float32), rows=rows
            )
        if hasattr(self.model, "decision_function"):
            return Predictions(logits=self.model.decision_function(X).astype(np.float32), rows=rows)
        return Predictions(logits=np.log(self.model.predict_proba(X) + 1e-4).astype(np.float32), rows=rows)

    def predict_adata(self, adata, *, batch_size: int = 256) -> Predictions:  # pragma: no cover
        raise NotImplementedError


def _fit_mlp(X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, n_classes: int, epochs: int):
    """An MLP trained epoch by epoch, logging the same columns as ``cellformer train``."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(hidden_layer_sizes=(32,), learning_rate_init=3e-3, random_state=0, batch_size=128)
    rows = []
    for epoch in range(epochs):
        start = time.perf_counter()
        mlp.partial_fit(X, y, classes=np.arange(n_classes))
        seconds = time.perf_counter() - start
        row = {"epoch": epoch}
        for split, (A, b) in (("train", (X, y)), ("val", (Xv, yv))):
            proba = mlp.predict_proba(A)
            pred = proba.argmax(axis=1)
            row[f"{split}_loss"] = log_loss(b, proba, labels=np.arange(n_classes))
            row[f"{split}_acc"] = accuracy_score(b, pred)
            row[f"{split}_macro_f1"] = f1_score(b, pred, average="macro")
        rows.append({**row, "lr": 3e-3, "seconds": seconds})
    return mlp, rows


def make_run(root: Path, name: str, kind: str, prepared: PreparedData, features: np.ndarray) -> FeatureRun:
    """Fit a small model of ``kind`` on the training split and write its run directory."""
    from safetensors.numpy import save_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(prepared.labels)
    train, val = prepared.split_rows("train"), prepared.split_rows("val")
    X, y = features[train], labels[train]
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config: dict[str, Any] = {
        "kind": kind,
        "status": "finished",
        "prepared": {"path": str(prepared.path), "meta": prepared.meta},
        "seed": 0,
        "data_fingerprint": prepared.fingerprint(),
    }
    start = time.perf_counter()
    if kind == "logreg":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs may stop at max_iter; any fitted model will do
            model = LogisticRegression(C=0.5, max_iter=300).fit(X, y)
        arrays = {"coef": model.coef_, "intercept": model.intercept_}
    elif kind == "knn":
        model = KNeighborsClassifier(n_neighbors=10).fit(X, y)
        arrays = {"reference": X, "reference_labels": y}
    else:
        model, log_rows = _fit_mlp(X, y, features[val], labels[val], prepared.n_classes, epochs=12)
        arrays = {f"w{i}": w for i, w in enumerate(model.coefs_ + model.intercepts_)}
        header = list(log_rows[0])
        (run_dir / "log.csv").write_text(
            "\n".join([",".join(header)] + [",".join(str(r[h]) for h in header) for r in log_rows]) + "\n"
        )
    if kind != "transformer":
        config["train_seconds"] = time.perf_counter() - start
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(run_dir / "model.safetensors"))
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "classes.json").write_text(
        json.dumps({"classes": prepared.classes, "unseen": prepared.unseen})
    )
    run = FeatureRun(run_dir, kind, config, prepared.classes, features, model)
    fit_calibration(run, prepared).save(run_dir)  # as train / baseline do: evaluate reads it
    write_manifest(run_dir, "run")
    return run


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, bladder: Bladder, bladder_path: Path) -> PreparedData:
    return write_prepared(tmp_path_factory.mktemp("prepared") / "bladder", bladder, bladder_path, seed=0)


@pytest.fixture(scope="session")
def runs(tmp_path_factory, prepared: PreparedData, bladder: Bladder) -> list[FeatureRun]:
    """Three evaluated runs on the test split: a stand-in transformer (an MLP with a log), logreg and kNN."""
    root = tmp_path_factory.mktemp("runs")
    made = [
        make_run(root, name, kind, prepared, bladder.features)
        for name, kind in (("transformer", "transformer"), ("logreg", "logreg"), ("knn", "knn"))
    ]
    for run in made:
        evaluate_model(run, prepared, split="test")
    return made


@pytest.fixture(scope="session")
def withheld() -> str:
    """The label kept out of training (its test cells are unseen labels)."""
    return WITHHELD


@pytest.fixture(scope="session")
def other_split_run(tmp_path_factory, bladder: Bladder, bladder_path: Path) -> FeatureRun:
    """An evaluated logreg run on the same cells prepared with other splits (seed 1)."""
    root = tmp_path_factory.mktemp("other")
    other = write_prepared(root / "bladder_seed1", bladder, bladder_path, seed=1)
    run = make_run(root, "logreg_seed1", "logreg", other, bladder.features)
    evaluate_model(run, other, split="test")
    return run


@pytest.fixture(scope="session")
def report(tmp_path_factory, runs: list[FeatureRun]) -> Path:
    """``compare`` on the three evaluated runs; returns the path of report.html."""
    from cellformer.evaluation.report import compare

    return compare([r.run_dir for r in runs], out=tmp_path_factory.mktemp("report") / "report")


@pytest.fixture(scope="session")
def run_factory():
    """``make_run(root, name, kind, prepared, features)``: fit and write one more run directory."""
    return make_run
