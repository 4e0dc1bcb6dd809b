"""docs/tutorial.ipynb runs from top to bottom (tiny settings), so it cannot fall out of date."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def test_the_tutorial_notebook_runs(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    settings = notebook.cells[1]
    assert "QUICK = False" in settings.source and 'WORK = Path("cellformer_tutorial")' in settings.source
    settings.source = settings.source.replace("QUICK = False", "QUICK = True").replace(
        'Path("cellformer_tutorial")', f"Path({str(tmp_path / 'tutorial')!r})"
    )
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = {
        i: cell.get("outputs", []) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
    }
    texts = [
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for out in outputs.values()
        for o in out
    ]
    joined = "\n".join(texts)
    assert "report:" in joined and "transformer" in joined and "logreg" in joined and "knn" in joined
    assert "cellformer_prediction" in joined and "cellformer_unknown" in joined
    images = [o for out in outputs.values() for o in out if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the comparison plots and the confidence histogram
    assert (tmp_path / "tutorial" / "report" / "report.html").exists()
