"""``evaluate`` on real run directories: files written, numbers right, bad inputs refused."""

from __future__ import annotations

import json
import os
import shutil

import matplotlib.image
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

import cellformer
from cellformer.errors import InputError, RunDirError
from cellformer.evaluation.api import evaluate_model
from cellformer.integrity import write_manifest
from cellformer.preparation.prepared import PreparedData


def test_writes_metrics_predictions_and_plots(runs, prepared):
    for run in runs:
        metrics = json.loads((run.run_dir / "metrics" / "test.json").read_text())
        with np.load(run.run_dir / "predictions" / "test.npz") as npz:
            y_true, proba, rows = npz["y_true"], npz["proba"], npz["rows"]
            has_embeddings = "embeddings" in npz
        np.testing.assert_array_equal(rows, prepared.split_rows("test"))
        np.testing.assert_array_equal(y_true, np.asarray(prepared.labels)[rows])
        assert has_embeddings == (run.kind == "transformer")
        y_pred = proba.argmax(axis=1)
        assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
        assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
        assert metrics["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
        assert metrics["ci"]["macro_f1"][0] <= metrics["macro_f1"] <= metrics["ci"]["macro_f1"][1]
        assert metrics["calibration"]["fitted_on"] == "val" and metrics["calibration"]["temperature"] > 0
        assert len(metrics["per_class"]) == len(prepared.classes) + len(prepared.unseen)
        assert metrics["model"]["n_parameters"] > 0
        assert metrics["model"]["train_seconds"] is not None
        expected_plots = {"confusion", "per_class_f1", "reliability"} | (
            {"learning_curves"} if run.kind == "transformer" else set()
        )
        assert set(metrics["plots"]) == expected_plots
        for rel in metrics["plots"].values():
            image = matplotlib.image.imread(run.run_dir / rel)
            assert image.shape[0] > 200 and image.shape[1] > 200


def test_unseen_labels_count_as_errors_and_are_reported(runs, prepared, withheld):
    unseen_id = len(prepared.classes) + prepared.unseen.index(withheld)
    n_withheld = int((np.asarray(prepared.labels)[prepared.split_rows("test")] == unseen_id).sum())
    assert n_withheld == 8
    metrics = json.loads((runs[1].run_dir / "metrics" / "test.json").read_text())
    assert metrics["n_unseen_cells"] == n_withheld
    (report,) = metrics["unseen"]
    assert report["label"] == withheld and sum(report["predicted_as"].values()) == n_withheld
    seen_acc = metrics["accuracy_seen_labels"]
    n = metrics["n_cells"]
    assert metrics["accuracy"] == pytest.approx(seen_acc * (n - n_withheld) / n)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(RunDirError, match="no config.json"):
        cellformer.evaluate(tmp_path)
    with pytest.raises(RunDirError, match="does not exist"):
        cellformer.evaluate(tmp_path / "missing")


def test_recorded_prepared_dataset_missing(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"kind": "logreg", "prepared": {"path": str(tmp_path / "gone")}})
    )
    with pytest.raises(RunDirError, match="--prepared"):
        cellformer.evaluate(tmp_path)


def test_split_without_labels(tmp_path, runs, prepared):
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(prepared.path, unlabelled)
    labels = np.load(unlabelled / "labels.npy")
    labels[prepared.split_rows("test")] = -1
    np.save(unlabelled / "labels.npy", labels)
    write_manifest(unlabelled, "prepared")  # hand-edited: its files recorded again
    with pytest.raises(InputError, match="no labelled cells"):
        evaluate_model(runs[1], PreparedData(unlabelled), split="test")


def test_missing_split_and_other_classes(runs, prepared, tmp_path):
    no_val = tmp_path / "no_split"
    shutil.copytree(prepared.path, no_val)
    np.savez(no_val / "splits.npz", train=prepared.split_rows("train"), test=prepared.split_rows("test"))
    write_manifest(no_val, "prepared")
    with pytest.raises(RunDirError, match="no 'val' split"):
        evaluate_model(runs[1], PreparedData(no_val), split="val")
    other = tmp_path / "other_classes"
    shutil.copytree(prepared.path, other)
    (other / "classes.json").write_text(json.dumps({"classes": prepared.classes[:-1], "unseen": []}))
    write_manifest(other, "prepared")
    with pytest.raises(RunDirError, match="other classes"):
        evaluate_model(runs[1], PreparedData(other), split="test")


def test_public_api_is_callable_after_submodule_import():
    """No public function shares its name with a submodule (importing it would shadow the function)."""
    import importlib
    import pkgutil

    for module in pkgutil.walk_packages(cellformer.__path__, "cellformer."):
        if not module.name.startswith("cellformer.cli"):
            importlib.import_module(module.name)
    for name in cellformer._API:
        assert callable(getattr(cellformer, name)), name
        assert getattr(cellformer, name).__name__ == name


def test_unlabelled_validation_split_leaves_probabilities_uncalibrated(
    tmp_path, prepared, bladder, run_factory
):
    from cellformer.evaluation.report import needs_evaluation

    copy = tmp_path / "val_unlabelled"
    shutil.copytree(prepared.path, copy)
    labels = np.load(copy / "labels.npy")
    labels[prepared.split_rows("val")] = -1
    np.save(copy / "labels.npy", labels)
    write_manifest(copy, "prepared")
    data = PreparedData(copy)
    run = run_factory(tmp_path / "runs", "logreg", "logreg", data, bladder.features)
    assert needs_evaluation(run.run_dir, "test")
    metrics = evaluate_model(run, data, split="test")
    assert metrics["calibration"]["fitted_on"] is None and metrics["calibration"]["temperature"] == 1.0
    assert metrics["calibration"]["ece_after"] == pytest.approx(metrics["calibration"]["ece_before"])
    assert not needs_evaluation(run.run_dir, "test")
    model = run.run_dir / "model.safetensors"
    stamp = (run.run_dir / "metrics" / "test.json").stat().st_mtime + 10
    os.utime(model, (stamp, stamp))  # retrained after evaluation: compare must evaluate again
    assert needs_evaluation(run.run_dir, "test")
