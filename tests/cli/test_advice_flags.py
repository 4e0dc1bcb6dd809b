"""Every error message suggests only options that exist for the command that raised it.

Each case runs one sub-command on a common bad input and collects the ``--flags`` its one-line error
names; each must be a flag of that command. Flags inside a quoted command (`` `cellformer CMD ...` ``)
are checked against CMD instead: that is advice to run another command.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
QUOTED_COMMAND = re.compile(r"`cellformer (\w+)([^`]*)`")


def command_flags() -> dict[str, set[str]]:
    """``{sub-command: its option strings}`` from the parser the CLI builds."""
    import argparse

    from cellformer.cli import build_parser

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {
        name: {flag for action in sub._actions for flag in action.option_strings}
        for name, sub in subparsers.choices.items()
    }


def named_flags(command: str, message: str) -> list[tuple[str, str]]:
    """``(command, flag)`` for every flag a message names (quoted commands name their own)."""
    found = []
    for match in QUOTED_COMMAND.finditer(message):
        found += [(match.group(1), flag) for flag in FLAG.findall(match.group(2))]
    return found + [(command, flag) for flag in FLAG.findall(QUOTED_COMMAND.sub("", message))]


def test_named_flags_reads_quoted_commands():
    message = "run `cellformer prepare X --out DIR` first, or pass --prepared DIR"
    assert named_flags("evaluate", message) == [("prepare", "--out"), ("evaluate", "--prepared")]


# -- input files --------------------------------------------------------------------------------
def _write(path: Path, X, genes, labels=None, layers=None) -> Path:
    import anndata as ad
    import pandas as pd

    n = X.shape[0]
    labels = labels if labels is not None else [f"type_{i % 3}" for i in range(n)]
    obs = pd.DataFrame({"cell_type": labels}, index=[f"cell_{i}" for i in range(n)])
    adata = ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=list(genes)))
    for name, values in (layers or {}).items():
        adata.layers[name] = sp.csr_matrix(values)
    adata.write_h5ad(path)
    return path


def _variants(base: Path, counts: np.ndarray, genes: list[str]) -> dict[str, Path]:
    """Bad versions of a counts matrix (cells x genes) as .h5ad files in ``base``."""
    logged = np.log1p(counts / counts.sum(1, keepdims=True).clip(1) * 1e4).astype(np.float32)
    negative = counts.astype(np.float32) - 1
    nan = counts.astype(np.float32)
    nan[0, np.flatnonzero(nan[0])[0]] = np.nan
    duplicated = list(genes)
    duplicated[1] = duplicated[0]
    return {
        "counts": _write(base / "counts.h5ad", counts, genes),
        "log1p": _write(base / "log1p.h5ad", logged, genes),
        "log1p_with_counts_layer": _write(
            base / "log1p_layer.h5ad", logged, genes, layers={"counts": counts}
        ),
        "negative": _write(base / "negative.h5ad", negative, genes),
        "nan": _write(base / "nan.h5ad", nan, genes),
        "linear": _write(base / "linear.h5ad", counts * 100.5, genes),
        "duplicated_genes": _write(base / "duplicated.h5ad", counts, duplicated),
        "other_genes": _write(base / "other_genes.h5ad", counts, [f"other_{g}" for g in genes]),
        "one_class": _write(base / "one_class.h5ad", counts, genes, labels=["a"] * counts.shape[0]),
    }


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small synthetic files for prepare: 90 cells x 40 genes of Poisson counts, and bad variants."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(90, 40)).astype(np.float32)
    return _variants(tmp_path_factory.mktemp("advice_prepare"), counts, [f"g{i}" for i in range(40)])


@pytest.fixture(scope="module")
def bladder_cells(bladder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """60 real bladder cells (all genes) for predict, and bad variants."""
    import anndata as ad

    adata = ad.read_h5ad(bladder_path)[:60]
    counts = np.asarray(adata.X.todense(), dtype=np.float32)
    return _variants(tmp_path_factory.mktemp("advice_predict"), counts, list(map(str, adata.var_names)))


@pytest.fixture(scope="module")
def logreg_run(small_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cellformer

    return cellformer.baseline(
        small_prepared, method="logreg", out=tmp_path_factory.mktemp("advice") / "logreg"
    )


# -- the cases ----------------------------------------------------------------------------------
def _cases(synthetic, bladder_cells, small_prepared, logreg_run, tmp: Path) -> list[tuple[str, list]]:
    small = ["--min-genes", "1", "--min-cells", "1", "--max-genes", "8"]
    existing = tmp / "existing"
    (existing / "report").mkdir(parents=True)
    (existing / "annotated.h5ad").write_text("x")
    moved = tmp / "moved_run"
    shutil.copytree(logreg_run, moved)
    config = json.loads((moved / "config.json").read_text())
    config["prepared"]["path"] = str(tmp / "gone")
    (moved / "config.json").write_text(json.dumps(config))
    out = tmp / "new"
    p = synthetic
    prepare = [
        ["prepare", p["log1p"], "--out", out, *small],
        ["prepare", p["log1p_with_counts_layer"], "--out", out, *small],
        ["prepare", p["negative"], "--out", out, *small],
        ["prepare", p["nan"], "--out", out, *small],
        ["prepare", p["counts"], "--layer", "nope", "--out", out, *small],
        ["prepare", p["counts"], "--gene-key", "nope", "--out", out, *small],
        ["prepare", p["counts"], "--out", existing, *small],
        ["prepare", p["counts"], "--input-transform", "none", "--out", out, *small],
        ["prepare", p["linear"], "--input-normalized", "--input-transform", "log1p", "--out", out, *small],
        ["prepare", p["duplicated_genes"], "--out", out, *small],
        ["prepare", p["counts"], "--test", p["other_genes"], "--out", out, *small],
        ["prepare", p["counts"], "--label-key", "nope", "--out", out, *small],
        ["prepare", p["one_class"], "--out", out, *small],
        ["prepare", p["counts"], "--min-genes", "1000", "--out", out],
    ]
    b = bladder_cells
    new = tmp / "new.h5ad"
    predict = [
        ["predict", logreg_run, b["log1p"], "--out", new],
        ["predict", logreg_run, b["log1p_with_counts_layer"], "--out", new],
        ["predict", logreg_run, b["negative"], "--out", new],
        ["predict", logreg_run, b["nan"], "--out", new],
        ["predict", logreg_run, b["counts"], "--layer", "nope", "--out", new],
        ["predict", logreg_run, b["counts"], "--gene-key", "nope", "--out", new],
        ["predict", logreg_run, b["counts"], "--out", existing / "annotated.h5ad"],
        ["predict", logreg_run, b["counts"], "--out", b["counts"]],
        ["predict", logreg_run, b["counts"], "--out", tmp / "new.csv"],
        ["predict", logreg_run, b["counts"], "--input-transform", "log1p", "--out", new],
        [
            "predict",
            logreg_run,
            b["linear"],
            "--input-normalized",
            "--input-transform",
            "log1p",
            "--out",
            new,
        ],
        ["predict", logreg_run, b["duplicated_genes"], "--out", new],
        ["predict", logreg_run, b["other_genes"], "--out", new],
        ["predict", logreg_run, tmp / "missing.h5ad", "--out", new],
        ["predict", small_prepared, b["counts"], "--out", new],
    ]
    others = [
        ["train", small_prepared, "--out", existing],
        ["train", synthetic["counts"], "--out", out],
        ["train", tmp / "missing", "--out", out],
        ["train", small_prepared, "--out", tmp / "empty_run", "--resume"],
        ["baseline", small_prepared, "--method", "logreg", "--out", existing],
        ["baseline", synthetic["counts"], "--method", "logreg", "--out", out],
        ["evaluate", small_prepared],
        ["evaluate", moved],
        ["compare", logreg_run, "--out", existing],
        ["compare", logreg_run, f"{logreg_run}/", "--out", out],
        ["compare", small_prepared, "--out", out],
        ["demo", "--out", existing],
    ]
    return prepare + predict + others


def test_every_flag_an_error_names_is_an_option_of_its_command(
    cli, synthetic, bladder_cells, small_prepared, logreg_run, tmp_path: Path
) -> None:
    flags = command_flags()
    assert set(flags) == {
        "prepare",
        "train",
        "baseline",
        "evaluate",
        "compare",
        "predict",
        "merge-annotations",
        "demo",
    }
    wrong, named = [], {}
    for args in _cases(synthetic, bladder_cells, small_prepared, logreg_run, tmp_path):
        command = args[0]
        code, err = cli(*args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (args, err)
        for where, flag in named_flags(command, err):
            named.setdefault(where, set()).add(flag)
            if flag not in flags[where]:
                wrong.append(
                    f"{' '.join(map(str, args))}\n  {err.strip()}\n  {flag} is not an option of {where}"
                )
    assert not wrong, "\n".join(wrong)
    # the advice these cases are about is there (so the check above is not vacuous)
    assert {"--input-normalized", "--layer", "--gene-key", "--overwrite", "--input-transform"} <= named[
        "predict"
    ]
    assert {"--input-normalized", "--layer", "--gene-key", "--overwrite", "--input-transform"} <= named[
        "prepare"
    ]
    assert {"--resume", "--out"} <= named["train"] and "--prepared" in named["evaluate"]
    assert not list(tmp_path.glob("new*"))  # nothing written by a refused command
