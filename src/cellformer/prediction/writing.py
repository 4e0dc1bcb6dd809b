"""Writing predictions to files: an annotated copy, annotations only, and shards joined again.

- :func:`write_annotated_copy`: the input file copied byte for byte (never read whole), then the new
  ``obs`` columns, ``obsm`` arrays and ``uns`` entry written into the copy; renamed onto ``out`` only
  when complete.
- :func:`write_annotations`: just the annotations, as a small ``.h5ad`` (``obs`` = the new columns,
  indexed by cell name) and a CSV table beside it (``OUT.csv``: cell, prediction, confidence, unknown,
  unknown score), for users who keep their atlas where it is.
- :func:`merge_annotations`: the annotation files of ``predict --shard K/N`` pieces, checked to come
  from one run and one input file and to cover it exactly, joined in input order.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cellformer.atomic import atomic_path
from cellformer.errors import ConfigError, InputError

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

SCORE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
TABLE_COLUMNS = ("prediction", "confidence", "unknown", "unknown_score")


def score_quantiles(scores: np.ndarray) -> dict[str, float]:
    """The finite unknown scores' 5/25/50/75/95 % quantiles, as ``params['unknown']['score_quantiles']``."""
    finite = np.asarray(scores, np.float64)
    finite = finite[np.isfinite(finite)]
    values = np.quantile(finite, SCORE_QUANTILES) if len(finite) else np.full(len(SCORE_QUANTILES), np.nan)
    return {f"q{round(100 * q):02d}": float(v) for q, v in zip(SCORE_QUANTILES, values, strict=True)}


def parse_shard(text: str | tuple[int, int]) -> tuple[int, int]:
    """``"K/N"`` (1 <= K <= N) as ``(K, N)``; anything else is a :class:`ConfigError`."""
    if isinstance(text, tuple):
        index, count = text
    else:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if match is None:
            raise ConfigError(
                f"--shard {text!r} is not K/N: give the piece and the number of pieces, e.g. 3/10"
            )
        index, count = int(match[1]), int(match[2])
    if not 1 <= index <= count:
        raise ConfigError(
            f"--shard {index}/{count}: the piece K must be between 1 and the number of pieces N ({count}), "
            f"e.g. 1/{max(count, 1)} ... {max(count, 1)}/{max(count, 1)}"
        )
    return index, count


def shard_rows(index: int, count: int, n_obs: int) -> tuple[int, int]:
    """The contiguous rows ``[start, stop)`` of piece ``index`` of ``count`` (sizes differ by at most 1)."""
    return (index - 1) * n_obs // count, index * n_obs // count


def table_path(out: str | Path) -> Path:
    """The CSV written beside an annotations-only ``.h5ad``."""
    out = Path(out)
    return out.with_suffix(".csv")


# -- writing -------------------------------------------------------------------------------------
def write_annotations(annotations: ad.AnnData, out: Path, *, key_added: str, compression: str | None) -> None:
    """``out`` (the annotations as a small ``.h5ad``) and its CSV table, both atomically."""
    table = annotations.obs[[f"{key_added}_{name}" for name in TABLE_COLUMNS]].copy()
    table.columns = list(TABLE_COLUMNS)
    table.index.name = "cell"
    with atomic_path(table_path(out)) as tmp:
        table.to_csv(tmp)
    try:
        with atomic_path(out) as tmp:
            annotations.write_h5ad(tmp, compression=compression)
    except BaseException:
        table_path(out).unlink(missing_ok=True)
        raise


def existing_keys(obs: Sequence[str], obsm: Sequence[str], uns: Sequence[str], key_added: str) -> list[str]:
    """The keys a prediction under ``key_added`` would replace, as ``obs['...']`` etc."""
    names = ("prediction", "confidence", "unknown", "unknown_score")
    found = [f"obs['{key_added}_{n}']" for n in names if f"{key_added}_{n}" in obs]
    found += [
        f"obsm['{k}']" for k in (f"{key_added}_proba", f"X_{key_added}", f"X_{key_added}_umap") if k in obsm
    ]
    found += [f"uns['{key_added}']"] if key_added in uns else []
    return found


def write_annotated_copy(
    input: Path, annotations: ad.AnnData, out: Path, *, key_added: str, compression: str | None
) -> None:
    """Copy ``input`` to ``out`` with ``annotations``' obs columns, obsm arrays and uns entry added.

    The matrices are copied as bytes, never loaded; ``obs`` (one row per cell, no expression) is read,
    extended and written back. Existing keys of ``key_added`` are replaced (with a warning).
    """
    import h5py
    from anndata.io import read_elem, write_elem

    options = {"compression": compression} if compression else {}
    with atomic_path(out) as tmp:
        shutil.copyfile(input, tmp)
        with h5py.File(tmp, "r+") as file:
            obs = read_elem(file["obs"])
            if not obs.index.equals(annotations.obs.index):
                raise InputError(f"the cells of {input} changed while they were annotated; run predict again")
            replaced = existing_keys(
                list(obs.columns),
                list(file.get("obsm", {}).keys()),
                list(file.get("uns", {}).keys()),
                key_added,
            )
            if replaced:
                logger.warning(
                    "%s already has %s: replacing them (choose another key_added / --key-added to keep both)",
                    input,
                    ", ".join(replaced),
                )
            for column in annotations.obs.columns:
                obs[column] = annotations.obs[column].values
            del file["obs"]
            write_elem(file, "obs", obs)
            for group, entries in (
                ("obsm", annotations.obsm),
                ("uns", {key_added: annotations.uns[key_added]}),
            ):
                if group not in file:
                    write_elem(file, group, {})
                for key, value in dict(entries).items():
                    if key in file[group]:
                        del file[group][key]
                    data = np.asarray(value) if group == "obsm" else value
                    write_elem(file[group], key, data, dataset_kwargs=options if group == "obsm" else {})
    logger.info("annotated copy of %s written to %s", input, out)


# -- shards --------------------------------------------------------------------------------------
def merge_annotations(
    pieces: Sequence[str | Path],
    *,
    out: str | Path,
    overwrite: bool = False,
    key_added: str = "cellformer",
    compression: str | None = "gzip",
) -> Path:
    """Join the annotation files of ``predict --shard K/N`` pieces into one (``out`` and its CSV).

    The pieces must come from one run and one input file, and hold every piece ``1..N`` exactly once
    (in any order); the result equals annotating the whole file at once (``--annotations-only``).
    """
    import anndata as ad
    import pandas as pd

    out = Path(out)
    if out.suffix != ".h5ad":
        raise ConfigError(f"--out {out} must end in .h5ad")
    paths = [Path(p) for p in pieces]
    if not paths:
        raise ConfigError("give the annotation files of the pieces to merge (predict --shard K/N outputs)")
    for path in paths:
        if not path.is_file():
            raise InputError(f"piece {path} does not exist")
        if path.resolve() == out.resolve():
            raise ConfigError(
                f"--out {out} is one of the pieces; choose another path (pieces are never modified)"
            )
    if not overwrite:
        for path in (out, table_path(out)):
            if path.exists():
                raise ConfigError(f"output {path} already exists; choose another --out or pass --overwrite")
    loaded = []
    for path in paths:
        try:
            adata = ad.read_h5ad(path)
        except OSError as exc:
            raise InputError(f"cannot read piece {path} as an .h5ad file ({exc})") from None
        params = adata.uns.get(key_added, {}).get("params", {})
        if "shard" not in params:
            raise InputError(
                f"{path} is not a piece of `cellformer predict --shard K/N` (no uns['{key_added}']['params']"
                "['shard']); give the pieces' annotation files (or the --key-added they were written with)"
            )
        loaded.append((path, adata, params))
    first_path, first, first_params = loaded[0]
    count = int(first_params["shard"]["count"])
    seen: dict[int, Path] = {}
    for path, _, params in loaded:
        for what, key in (("run", "run_digest"), ("input file", "input_file")):
            if params.get(key) != first_params.get(key):
                raise InputError(
                    f"{path} and {first_path} are pieces of different {what}s ({params.get(key)} vs "
                    f"{first_params.get(key)}); merge pieces of one predict run over one file"
                )
        shard = params["shard"]
        if int(shard["count"]) != count:
            raise InputError(
                f"{path} is piece {shard['index']}/{shard['count']}, {first_path} one of {count}"
            )
        index = int(shard["index"])
        if index in seen:
            raise InputError(f"{path} and {seen[index]} are both piece {index}/{count}; give each piece once")
        seen[index] = path
    missing = sorted(set(range(1, count + 1)) - set(seen))
    if missing:
        raise InputError(
            f"pieces {', '.join(f'{k}/{count}' for k in missing)} are missing; run predict --shard for them "
            "and merge all the pieces"
        )
    loaded.sort(key=lambda item: int(item[2]["shard"]["index"]))
    merged = ad.concat([adata for _, adata, _ in loaded], axis=0, merge="first")
    merged.obs = pd.concat([adata.obs for _, adata, _ in loaded])  # keeps the categories' order
    for column in merged.obs.columns:
        categories = loaded[0][1].obs[column].dtype
        if isinstance(categories, pd.CategoricalDtype):
            merged.obs[column] = pd.Categorical(merged.obs[column], categories=categories.categories)
    params = {key: value for key, value in first_params.items() if key != "shard"}
    scores = merged.obs[f"{key_added}_unknown_score"].to_numpy()
    unknown = merged.obs[f"{key_added}_unknown"].to_numpy()
    params["unknown"] = dict(first_params["unknown"])
    if "score_quantiles" in params["unknown"]:
        params["unknown"]["score_quantiles"] = score_quantiles(scores[np.isfinite(scores)])
    params["unknown"]["flagged_fraction"] = float(np.mean(unknown)) if len(unknown) else 0.0
    params["n_no_genes"] = int(sum(int(p.get("n_no_genes", 0)) for _, _, p in loaded))
    params["n_training_cells"] = int(sum(int(p.get("n_training_cells", 0)) for _, _, p in loaded))
    params["merged_from"] = count
    merged.uns[key_added] = {"classes": first.uns[key_added]["classes"], "params": params}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_annotations(merged, out, key_added=key_added, compression=compression)
    return out
