"""``compare``: the report lists every run and plot, says plainly who wins, and refuses bad inputs."""

from __future__ import annotations

import base64
import dataclasses
import json
import re

import numpy as np
import pytest

import cellformer
from cellformer.errors import InputError, RunDirError
from cellformer.evaluation.report import analyse, compare, load_result, unique_names

EXPECTED_FIGURES = {
    "intervals.png",
    "per_class_f1.png",
    "reliability_all.png",
    "transformer_confusion.png",
    "logreg_confusion.png",
    "knn_confusion.png",
    "transformer_learning_curves.png",
    "transformer_reliability.png",
    "logreg_reliability.png",
    "knn_reliability.png",
}


def test_report_files_and_content(report, runs, prepared):
    out = report.parent
    assert report.name == "report.html"
    assert {p.name for p in out.glob("*.png")} == EXPECTED_FIGURES
    markdown = (out / "report.md").read_text()
    for name in EXPECTED_FIGURES:
        assert f"]({name})" in markdown
    table = markdown.split("## All runs side by side")[1].split("##")[0]
    for run in runs:
        assert re.search(rf"^\| {run.run_dir.name} \| {run.kind} \|", table, re.M)
    for label in prepared.classes:
        assert f"| {label} |" in markdown
    assert "No training log" in markdown and "class_16" in markdown
    summary = json.loads((out / "report.json").read_text())
    assert summary["reference_baseline"] in {"logreg", "knn"}
    assert {r["name"] for r in summary["runs"]} == {"transformer", "logreg", "knn"}
    assert summary["verdict"] and summary["n_cells"] == len(prepared.split_rows("test"))


def test_html_is_self_contained(report):
    html = report.read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == len(EXPECTED_FIGURES)
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(href|src)="(https?:)?//', html)  # nothing fetched from the network


def _as(result, name: str, kind: str, logits: np.ndarray | None = None):
    return dataclasses.replace(
        result, name=name, kind=kind, logits=result.logits if logits is None else logits
    )


def test_verdict_says_plainly_when_a_baseline_is_as_good(runs):
    logreg = load_result(runs[1].run_dir, "test")
    twin = _as(logreg, "my_transformer", "transformer")  # exactly the baseline's predictions
    verdict = " ".join(analyse([twin, logreg])["verdict"])
    assert "**The baseline logreg is as good as the transformer my_transformer**" in verdict


def test_verdict_when_transformer_is_better_or_worse(runs):
    logreg = load_result(runs[1].run_dir, "test")
    n_classes = logreg.logits.shape[1]
    seen = logreg.y_true < n_classes
    perfect = np.where(seen[:, None], np.eye(n_classes)[np.minimum(logreg.y_true, n_classes - 1)], 0.0)
    better = " ".join(analyse([_as(logreg, "t", "transformer", perfect), logreg])["verdict"])
    assert "The transformer **t is better than the best baseline logreg**" in better
    worse_logits = np.roll(logreg.logits, 1, axis=1)  # every prediction shifted to the next class
    worse = " ".join(analyse([_as(logreg, "t", "transformer", worse_logits), logreg])["verdict"])
    assert "**The baseline logreg is better than the transformer t**" in worse


def test_refuses_runs_prepared_on_other_splits(runs, other_split_run, tmp_path):
    with pytest.raises(InputError, match="different data or splits"):
        compare([runs[1].run_dir, other_split_run.run_dir], out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_refuses_existing_output_unless_overwrite(runs, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="--overwrite"):
        compare([runs[1].run_dir], out=out)
    assert (out / "keep.txt").exists()
    path = cellformer.compare([runs[1].run_dir, runs[2].run_dir], out=out, overwrite=True)
    assert path.exists() and not (out / "keep.txt").exists()
    assert "No baseline" not in " ".join(json.loads((out / "report.json").read_text())["verdict"])


def test_refuses_directories_that_are_not_runs(tmp_path):
    with pytest.raises(RunDirError, match="not a cellformer run directory"):
        compare([tmp_path], out=tmp_path / "r")


def test_unique_names(tmp_path):
    names = unique_names([tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "c"])
    assert names == ["a/run", "b/run", "c"]
