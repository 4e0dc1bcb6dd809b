"""``compare``: the report lists every run and plot, says plainly who wins, and refuses bad inputs."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
import shutil

import numpy as np
import pytest

import cellformer
from cellformer.errors import InputError, RunDirError
from cellformer.evaluation.render import per_class_table, summary_table
from cellformer.evaluation.report import SMALL_CLASS, analyse, compare, load_result, unique_names

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
    assert "resampled within each true cell type" in markdown  # the bootstrap method is stated
    assert "percentage points" not in markdown
    summary = json.loads((out / "report.json").read_text())
    assert summary["reference_baseline"] in {"logreg", "knn"}
    assert {r["name"] for r in summary["runs"]} == {"transformer", "logreg", "knn"}
    assert summary["verdict"] and summary["n_cells"] == len(prepared.split_rows("test"))


def test_markdown_and_html_show_the_same_report(report):
    """Both files render one document (render.report_document): same sections, tables, figures, verdict."""
    out = report.parent
    markdown, page = (out / "report.md").read_text(), report.read_text()
    assert re.findall(r"^## (.+)$", markdown, re.M) == re.findall(r"<h2 id=\"[^\"]+\">(.+?)</h2>", page)
    assert markdown.count("\n|---|") == page.count("<table")
    assert re.findall(r"^\*(.+)\*$", markdown, re.M) == re.findall(
        r"<figcaption[^>]*>(.+?)</figcaption>", page
    )
    assert len(re.findall(r"^- ", markdown, re.M)) == page.count("<li>")


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
    assert "**The baseline logreg is as good as my_transformer**" in verdict


def test_verdict_when_transformer_is_better_or_worse(runs):
    logreg = load_result(runs[1].run_dir, "test")
    n_classes = logreg.logits.shape[1]
    seen = logreg.y_true < n_classes
    perfect = np.where(seen[:, None], np.eye(n_classes)[np.minimum(logreg.y_true, n_classes - 1)], 0.0)
    better = " ".join(analyse([_as(logreg, "t", "transformer", perfect), logreg])["verdict"])
    assert "**The transformer t is better than the best baseline, logreg**" in better
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


def _with(result, name: str, kind: str, per_class_f1=None, calibration=None):
    """A copy of ``result`` under another name, with some per-class F1 or calibration numbers replaced."""
    metrics = copy.deepcopy(result.metrics)
    for c in metrics["per_class"]:
        c["f1"] = (per_class_f1 or {}).get(c["label"], c["f1"])
    metrics["calibration"].update(calibration or {})
    return dataclasses.replace(result, name=name, kind=kind, metrics=metrics)


def test_run_named_like_its_kind_is_named_once(runs):
    logreg = load_result(runs[1].run_dir, "test")
    worse_logits = np.roll(logreg.logits, 1, axis=1)
    verdict = " ".join(analyse([_as(logreg, "transformer", "transformer", worse_logits), logreg])["verdict"])
    assert "**The baseline logreg is better than transformer**" in verdict
    assert "transformer transformer" not in verdict


def test_small_classes_are_named_not_judged_and_their_gaps_listed_apart(runs):
    logreg = load_result(runs[1].run_dir, "test")
    seen = [c for c in logreg.metrics["per_class"] if c["seen_in_training"] and c["support"] > 0]
    small = min(seen, key=lambda c: c["support"])
    large = max(seen, key=lambda c: c["support"])
    assert small["support"] < SMALL_CLASS <= large["support"]
    base = _with(logreg, "logreg", "logreg", {small["label"]: 0.0})
    t = _with(logreg, "t", "transformer", {small["label"]: 0.9, large["label"]: large["f1"] - 0.3})
    verdict = analyse([t, base])["verdict"]
    unreliable = [line for line in verdict if "is unreliable on" in line]
    assert all(small["label"] not in line for line in unreliable)
    (too_small,) = [line for line in verdict if f"fewer than {SMALL_CLASS}" in line]
    assert f"{small['label']} (0.00, {small['support']} cells)" in too_small
    assert "too few cells to judge" in too_small
    (gaps,) = [line for line in verdict if line.startswith("Largest per-class")]
    assert f"at least {SMALL_CLASS} test cells: {large['label']} -0.30" in gaps
    assert f"among smaller cell types (too few cells to rank on): {small['label']} +0.90" in gaps


def test_best_per_class_marks_only_strict_or_tied_winners(runs):
    logreg = load_result(runs[1].run_dir, "test")
    labels = [c["label"] for c in logreg.metrics["per_class"] if c["seen_in_training"]]
    a = _with(logreg, "a", "logreg", {label: 0.0 for label in labels})
    b = _with(logreg, "b", "knn", {labels[0]: 0.5, **{label: 0.0 for label in labels[1:]}})
    c = _with(logreg, "c", "mlp", {labels[0]: 0.5, **{label: 0.0 for label in labels[1:]}})
    _, rows, best = per_class_table([a, b, c])
    for row, marked in zip(rows, best, strict=True):
        assert marked == ({1, 2} if row[0] == labels[0] else set())
    with_html = compare_html([a, b, c])
    assert with_html.count('class="best"') == 2


def compare_html(results) -> str:
    from cellformer.evaluation.render import _html_table

    header, rows, best = per_class_table(results)
    return _html_table(header, rows, best, offset=2)


def test_ece_is_a_fraction_and_worse_scaling_is_said(runs):
    logreg, knn = load_result(runs[1].run_dir, "test"), load_result(runs[2].run_dir, "test")
    # the run the report recommends (the best, or the simplest of those tied) gets a calibration that
    # temperature scaling made worse; the other one is the best calibrated
    named = {"logreg": _with(logreg, "logreg", "logreg"), "knn": _with(knn, "knn", "knn")}
    verdict = " ".join(analyse(list(named.values()))["verdict"])
    picked = next(name for name in named if f"**{name}**" in verdict)
    other = "knn" if picked == "logreg" else "logreg"
    hurt = _with(named[picked], picked, picked, calibration={"ece_before": 0.020, "ece_after": 0.150})
    fine = _with(named[other], other, other, calibration={"ece_before": 0.300, "ece_after": 0.100})
    analysis = analyse([fine, hurt])
    (line,) = [v for v in analysis["verdict"] if v.startswith("Confidence")]
    assert f"{picked}'s expected calibration error" in line
    assert "is 0.150 after temperature scaling" in line and "0.020 before" in line
    assert f"Temperature scaling made {picked}'s calibration worse" in line
    # the picked run was better calibrated before scaling, but predictions use the temperature
    assert f"The best calibrated run is {other} (ECE 0.100 with the temperature" in line
    assert "percentage points" not in line
    values = re.findall(r"ECE ([0-9.]+)", " ".join(analysis["verdict"]))
    assert values and all(re.fullmatch(r"0\.\d{3}", v) for v in values)
    header, rows = summary_table([fine, hurt], analysis)
    column = header.index("ECE before → after temperature scaling (T)")
    assert rows[1][column].startswith("0.020 → 0.150") and "worse after scaling" in rows[1][column]
    assert rows[0][column].startswith("0.300 → 0.100") and "worse" not in rows[0][column]


def test_metrics_of_another_format_version_are_re_evaluated(runs, tmp_path):
    from cellformer.evaluation.api import METRICS_FORMAT_VERSION
    from cellformer.evaluation.report import needs_evaluation

    copied = tmp_path / "logreg"
    shutil.copytree(runs[1].run_dir, copied)  # file times kept: the model is not newer than its metrics
    assert not needs_evaluation(copied, "test")
    metrics = json.loads((copied / "metrics" / "test.json").read_text())
    assert metrics["format_version"] == METRICS_FORMAT_VERSION
    metrics["format_version"] = METRICS_FORMAT_VERSION - 1  # e.g. intervals computed another way
    (copied / "metrics" / "test.json").write_text(json.dumps(metrics))
    assert needs_evaluation(copied, "test")
