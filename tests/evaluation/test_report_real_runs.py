"""The comparison report built from real runs on mouse_bladder_2100: a transformer and two baselines.

Everything goes through the public API (prepare, train, baseline, evaluate, compare), as a user would.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from test_browser import browser  # noqa: F401  (the headless chromium fixture)

import cellformer

RUNS = ("transformer", "logreg", "knn")


@pytest.fixture(scope="module")
def real_report(bladder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real_report")
    prepared = root / "prepared"
    cellformer.prepare(bladder_path, out=prepared, max_genes=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cellformer.train(
            prepared, out=root / "transformer", n_layers=1, d_model=32, n_heads=2, ff_hidden=64,
            head_hidden=32, max_length=64, batch_size=64, max_epochs=3, lr=1e-2, progress_bar=False,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    for method in ("logreg", "knn"):
        cellformer.baseline(prepared, method=method, out=root / method)
    return Path(cellformer.compare([root / name for name in RUNS], out=root / "report"))


def test_report_lists_every_run_and_embeds_every_plot(real_report: Path):
    html = real_report.read_text()
    markdown = (real_report.parent / "report.md").read_text()
    summary = json.loads((real_report.parent / "report.json").read_text())

    assert [run["name"] for run in summary["runs"]] == list(RUNS)
    for name in RUNS:
        assert re.search(rf"<td[^>]*>{name}</td>", html), name
        assert f"| {name} |" in markdown
        # the per-run plots exist in the report folder and in the run's own plots/
        for plot in ("confusion", "reliability"):
            assert (real_report.parent / f"{name}_{plot}.png").stat().st_size > 1000
            assert f"({name}_{plot}.png)" in markdown
        run_plots = {p.name for p in (real_report.parent.parent / name / "plots").iterdir()}
        assert {"confusion_test.png", "per_class_f1_test.png", "reliability_test.png"} <= run_plots
    # only the transformer has a training log, hence learning curves
    assert (real_report.parent / "transformer_learning_curves.png").exists()
    assert "(transformer_learning_curves.png)" in markdown
    for shared in ("per_class_f1.png", "intervals.png", "reliability_all.png"):
        assert f"({shared})" in markdown
    # one self-contained file: every image is a data URI, nothing is fetched
    sources = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(sources) == markdown.count("![")
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    # the verdict names the best run and compares the transformer with the best baseline
    assert summary["best"] in RUNS
    assert "transformer" in summary["verdict"][0] and "baseline" in summary["verdict"][0]


def test_real_report_renders_in_a_browser(real_report: Path, browser):  # noqa: F811
    alone = real_report.parent.parent / "alone" / "report.html"
    alone.parent.mkdir()
    shutil.copyfile(real_report, alone)  # no PNGs beside it: everything must come from the file
    browser.get(alone.as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);"
    )
    assert images and all(complete and width > 0 for complete, width, _ in images)
    table = browser.execute_script("return document.querySelector('#runs + table').innerText;")
    for name in RUNS:
        assert name in table
