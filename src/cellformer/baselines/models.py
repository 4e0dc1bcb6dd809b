"""The three baseline classifiers on standardized HVG features, as plain arrays; :data:`METHODS` is the
registry of baseline methods (each a :class:`Method`: its options, embedding, fit and forward).

Each ``fit_*`` returns ``(arrays, info)``: the fitted parameters (saved with safetensors) and a
JSON-able dict of chosen hyper-parameters. :func:`forward` computes ``(logits, embeddings)`` from those
arrays alone with numpy, so a saved baseline predicts without scikit-learn objects, pickles or torch.

- ``logreg``: multinomial logistic regression (the CellTypist approach: L2, ``C=1``, lbfgs on
  scaled log1p-normalized HVG expression). Embedding: the PCA coordinates.
- ``knn``: majority vote of the ``k`` nearest training cells in PCA space (``k`` chosen on the
  validation split). Embedding: the PCA coordinates.
- ``mlp``: one hidden ReLU layer, Adam, early stopping on the validation loss. Embedding: the hidden layer.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

KNN_CANDIDATES = (5, 10, 20, 40)
KNN_SMOOTHING = 0.1  # pseudo-votes per class, so probabilities are never exactly 0


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    f1 = []
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        denominator = np.sum(y_pred == c) + np.sum(y_true == c)
        if np.sum(y_true == c) > 0:
            f1.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(f1)) if f1 else 0.0


# ---------------------------------------------------------------- logistic regression
def fit_logreg(
    Z: np.ndarray, y: np.ndarray, n_classes: int, *, C: float = 1.0, max_iter: int = 1000, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y)
    model = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    model.fit(Z, y)
    coef = np.zeros((n_classes, Z.shape[1]), dtype=np.float32)
    intercept = np.full(n_classes, -1e4, dtype=np.float32)  # classes absent from training: never predicted
    if len(present) == 2:  # sklearn returns a single row for two classes
        coef[present[1]], intercept[present[1]] = model.coef_[0], model.intercept_[0]
        coef[present[0]], intercept[present[0]] = 0.0, 0.0
    else:
        coef[model.classes_] = model.coef_
        intercept[model.classes_] = model.intercept_
    info = {"C": C, "max_iter": max_iter, "n_iter": int(np.max(model.n_iter_))}
    return {"coef": coef, "intercept": intercept}, info


# ---------------------------------------------------------------- kNN
def _knn_votes(reference: np.ndarray, query: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    k_query = min(k + int(exclude_self), len(reference))
    index = NearestNeighbors(n_neighbors=k_query).fit(reference)
    _, neighbours = index.kneighbors(query)
    return neighbours[:, 1:] if exclude_self else neighbours


def knn_logits(
    reference: np.ndarray, reference_labels: np.ndarray, query: np.ndarray, k: int, n_classes: int
) -> np.ndarray:
    neighbours = _knn_votes(reference, query, k)
    votes = np.zeros((len(query), n_classes), dtype=np.float64)
    np.add.at(
        votes,
        (np.repeat(np.arange(len(query)), neighbours.shape[1]), reference_labels[neighbours].ravel()),
        1.0,
    )
    proba = (votes + KNN_SMOOTHING) / (neighbours.shape[1] + KNN_SMOOTHING * n_classes)
    return np.log(proba).astype(np.float32)


def fit_knn(
    P: np.ndarray, y: np.ndarray, P_val: np.ndarray | None, y_val: np.ndarray | None, n_classes: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Keep the training cells' PCA coordinates; choose ``k`` by validation macro-F1 (ties: smaller k)."""
    scores = {}
    candidates = [k for k in KNN_CANDIDATES if k <= len(P)] or [len(P)]
    if P_val is not None and len(P_val) > 0:
        for k in candidates:
            pred = knn_logits(P, y, P_val, k, n_classes).argmax(axis=1)
            scores[k] = _macro_f1(y_val, pred, n_classes)
        k_best = max(candidates, key=lambda k: (scores[k], -k))
    else:
        k_best = min(15, len(P))
    arrays = {"reference": P.astype(np.float32), "reference_labels": y.astype(np.int64)}
    return arrays, {"k": int(k_best), "val_macro_f1_by_k": {str(k): v for k, v in scores.items()}}


# ---------------------------------------------------------------- MLP
def fit_mlp(
    Z: np.ndarray,
    y: np.ndarray,
    Z_val: np.ndarray | None,
    y_val: np.ndarray | None,
    n_classes: int,
    *,
    hidden: int = 256,
    dropout: float = 0.3,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 128,
    max_epochs: int = 60,
    patience: int = 6,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, Any], list[dict[str, float]]]:
    """Train ``Linear → ReLU → Dropout → Linear``; keep the weights of the best validation epoch.

    Returns arrays, info and the per-epoch log (``epoch, train_loss, train_acc, val_loss, val_acc,
    val_macro_f1, lr, seconds``).
    """
    import time

    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(Z.shape[1], hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    X_t, y_t = torch.from_numpy(np.ascontiguousarray(Z, np.float32)), torch.from_numpy(y.astype(np.int64))
    has_val = Z_val is not None and len(Z_val) > 0
    if has_val:
        Xv, yv = (
            torch.from_numpy(np.ascontiguousarray(Z_val, np.float32)),
            torch.from_numpy(y_val.astype(np.int64)),
        )
    loss_fn = nn.CrossEntropyLoss()
    best_state, best_loss, best_epoch, waited, log = None, np.inf, 0, 0, []
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        net.train()
        order = torch.randperm(len(X_t), generator=generator)
        total, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            logits = net(X_t[batch])
            loss = loss_fn(logits, y_t[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            correct += int((logits.argmax(1) == y_t[batch]).sum())
            seen += len(batch)
        row = {"epoch": epoch, "train_loss": total / seen, "train_acc": correct / seen}
        monitored = row["train_loss"]
        if has_val:
            net.eval()
            with torch.no_grad():
                val_logits = net(Xv)
            row["val_loss"] = float(loss_fn(val_logits, yv))
            row["val_acc"] = float((val_logits.argmax(1) == yv).float().mean())
            row["val_macro_f1"] = _macro_f1(y_val, val_logits.argmax(1).numpy(), n_classes)
            monitored = row["val_loss"]
        row["lr"] = lr
        row["seconds"] = time.perf_counter() - started
        log.append(row)
        if monitored < best_loss - 1e-4:
            best_loss, best_epoch, waited = monitored, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    net.load_state_dict(best_state)
    arrays = {
        "w1": net[0].weight.detach().numpy().copy(),
        "b1": net[0].bias.detach().numpy().copy(),
        "w2": net[3].weight.detach().numpy().copy(),
        "b2": net[3].bias.detach().numpy().copy(),
    }
    info = {
        "hidden": hidden,
        "dropout": dropout,
        "lr": lr,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "max_epochs": max_epochs,
        "patience": patience,
        "best_epoch": best_epoch,
        "epochs_run": len(log),
    }
    return arrays, info, log


# ---------------------------------------------------------------- the registry
Arrays = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Features:
    """A split's features: standardized HVG expression ``Z``, its PCA coordinates ``P``, labels ``y``."""

    Z: np.ndarray
    P: np.ndarray
    y: np.ndarray


class Method:
    """A baseline method: everything cellformer knows about it (subclasses fill it in)."""

    name: str
    options: tuple[str, ...] = ()  # hyper-parameters ``cellformer.baseline(**options)`` accepts
    embedding: str = "PCA of the training features"  # what ``obsm['X_cellformer']`` holds (predict)
    # what the unknown-cell detector measures (cellformer.calibration.unknown); logreg: its PCA, not its
    # logits (bench/unknown.py, docs/unknown.md)
    unknown_space: str = "embedding"

    def fit(
        self, train: Features, val: Features, n_classes: int, *, seed: int, **options: Any
    ) -> tuple[Arrays, dict[str, Any], list[dict[str, float]] | None]:
        """``(arrays, info, per-epoch log or None)`` fitted on ``train`` (``val``: model selection)."""
        raise NotImplementedError

    def forward(
        self, arrays: Arrays, info: dict[str, Any], Z: np.ndarray, P: np.ndarray, n_classes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, embeddings)`` for standardized features ``Z`` and their PCA coordinates ``P``."""
        raise NotImplementedError

    def width(self, arrays: Arrays) -> int:
        """Columns of the embedding."""
        return arrays["pca_components"].shape[0]


class LogisticRegression(Method):
    name = "logreg"
    options = ("C", "max_iter")

    def fit(
        self, train: Features, val: Features, n_classes: int, *, seed: int, **options: Any
    ) -> tuple[Arrays, dict[str, Any], list[dict[str, float]] | None]:
        arrays, info = fit_logreg(train.Z, train.y, n_classes, seed=seed, **options)
        return arrays, info, None

    def forward(
        self, arrays: Arrays, info: dict[str, Any], Z: np.ndarray, P: np.ndarray, n_classes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return (Z @ arrays["coef"].T + arrays["intercept"]).astype(np.float32), P


class NearestNeighbours(Method):
    name = "knn"

    def fit(
        self, train: Features, val: Features, n_classes: int, *, seed: int, **options: Any
    ) -> tuple[Arrays, dict[str, Any], list[dict[str, float]] | None]:
        arrays, info = fit_knn(train.P, train.y, val.P, val.y, n_classes)
        return arrays, info, None

    def forward(
        self, arrays: Arrays, info: dict[str, Any], Z: np.ndarray, P: np.ndarray, n_classes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return knn_logits(arrays["reference"], arrays["reference_labels"], P, int(info["k"]), n_classes), P


class MultiLayerPerceptron(Method):
    name = "mlp"
    options = ("hidden", "dropout", "lr", "weight_decay", "batch_size", "max_epochs", "patience")
    embedding = "hidden layer"

    def fit(
        self, train: Features, val: Features, n_classes: int, *, seed: int, **options: Any
    ) -> tuple[Arrays, dict[str, Any], list[dict[str, float]] | None]:
        return fit_mlp(train.Z, train.y, val.Z, val.y, n_classes, seed=seed, **options)

    def forward(
        self, arrays: Arrays, info: dict[str, Any], Z: np.ndarray, P: np.ndarray, n_classes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        hidden = np.maximum(Z @ arrays["w1"].T + arrays["b1"], 0.0).astype(np.float32)
        return (hidden @ arrays["w2"].T + arrays["b2"]).astype(np.float32), hidden

    def width(self, arrays: Arrays) -> int:
        return arrays["w1"].shape[0]


# the baseline methods, in the order of cellformer.kinds.BASELINES (tests/baselines checks they agree)
METHODS: dict[str, Method] = {
    m.name: m for m in (LogisticRegression(), NearestNeighbours(), MultiLayerPerceptron())
}
