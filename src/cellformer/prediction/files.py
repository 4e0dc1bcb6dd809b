"""``cellformer predict`` on files: an ``.h5ad`` of any size streamed in chunks -> an annotated copy of
it, or the annotations only (``--annotations-only``), for the whole file or one ``--shard``; UMAP plot."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellformer.calibration.unknown import DEFAULT_QUANTILE
from cellformer.config import RunInput
from cellformer.errors import ConfigError, InputError
from cellformer.prediction.adata import predict
from cellformer.prediction.annotate import annotate
from cellformer.prediction.outputs import check_input_values, predict_chunks
from cellformer.prediction.run_setup import DEFAULT_CHUNK_SIZE, check_key_added, setup_run
from cellformer.text import is_primary_process
from cellformer.threads import torch_threads_kept

if TYPE_CHECKING:
    import anndata as ad


logger = logging.getLogger(__name__)

UMAP_MAX_CELLS = 50_000  # above this, predict_file draws no UMAP unless asked (umap=True / --umap)


def predict_file(
    run_dir: str | Path,
    input: str | Path,
    *,
    out: str | Path,
    overwrite: bool = False,
    batch_size: int = 256,
    umap: bool | None = None,
    key_added: str = "cellformer",
    compression: str | None = "gzip",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    annotations_only: bool = False,
    shard: str | tuple[int, int] | None = None,
    accelerator: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    **options: Any,
) -> dict[str, Path]:
    """Annotate the cells of the file ``input`` (never modified, never read whole) into ``out``.

    The input is read ``chunk_size`` cells at a time (:class:`~cellformer.data.file_cells.FileCells`);
    each chunk is aligned, tokenized and predicted, and only per-cell results are kept, so memory is set
    by ``chunk_size`` and ``batch_size``, not by the number of cells. What is written (atomically):

    - by default, an annotated copy of ``input`` (the file copied, the annotations written into it;
      :func:`~cellformer.prediction.writing.write_annotated_copy`);
    - with ``annotations_only``, the annotations alone: a small ``.h5ad`` and ``OUT.csv`` beside it;
    - with ``shard="K/N"``, the annotations of the K-th of N contiguous pieces of the cells (as
      ``annotations_only``), for scheduler array jobs; :func:`~cellformer.prediction.writing.merge_annotations`
      joins the pieces.

    ``umap``: draw ``OUT_umap.png`` (``None``: only up to :data:`UMAP_MAX_CELLS` cells, said in one line
    above). ``accelerator``, ``devices``, ``num_nodes`` and ``options`` are :func:`predict`'s; with
    several processes each reads and predicts its share of every chunk, and only the first writes.
    Returns the paths written (``h5ad``, and ``csv`` / ``umap`` when written); ``{}`` in the other
    processes of a multi-process run.
    """
    from cellformer.atomic import check_writable
    from cellformer.data.file_cells import FileCells, is_modern_h5ad
    from cellformer.prediction.writing import (
        parse_shard,
        shard_rows,
        table_path,
        write_annotated_copy,
        write_annotations,
    )
    from cellformer.runs import read_run_config, verify_run

    input, out = Path(input), Path(out)
    read_run_config(run_dir)  # fail early on a bad run directory
    verify_run(run_dir)  # ... or a damaged one (cellformer.integrity), before reading the input
    check_key_added(key_added)
    piece = None if shard is None else parse_shard(shard)
    annotations_only = annotations_only or piece is not None
    if input.is_dir():
        raise InputError(f"input {input} is a directory; give an .h5ad file")
    if not input.is_file():
        raise InputError(f"input file {input} does not exist")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give the path of the .h5ad file to write")
    if out.resolve() == input.resolve() or (
        annotations_only and table_path(out).resolve() == input.resolve()
    ):
        raise ConfigError(
            f"--out {out} is the input file; cellformer never overwrites its input: choose another path"
        )
    if out.suffix != ".h5ad":
        raise ConfigError(f"--out {out} must end in .h5ad")
    png = out.with_name(out.stem + "_umap.png")
    check_writable(out)  # a read-only or forbidden location fails before the predictions are computed
    if not overwrite:
        for path in (out, *((table_path(out),) if annotations_only else ()), *((png,) if umap else ())):
            if path.exists():
                raise ConfigError(f"output {path} already exists; choose another --out or pass --overwrite")
    setup = dict(
        batch_size=batch_size,
        key_added=key_added,
        chunk_size=chunk_size,
        unknown_quantile=options.pop("unknown_quantile", DEFAULT_QUANTILE),
        source=input,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
    )
    if not is_modern_h5ad(input):
        return _predict_file_in_memory(
            run_dir, input, out, png, piece, annotations_only, umap, setup, options
        )

    from cellformer.data.align import pinned_transform, training_input_options

    model, detector, options, predictor = setup_run(run_dir, **setup, **options)
    settings = {**training_input_options(model.config), **options}
    previous_layer = RunInput.of(model.config).prepare.previous_layer
    cells = FileCells(
        input,
        layer=settings.get("layer"),
        gene_key=settings.get("gene_key"),
        extra_layers=(previous_layer,) if previous_layer else (),
        chunk_size=min(chunk_size, 4096),
        layer_origin="given with --layer" if "layer" in options else "the one the model was trained on",
    )
    try:
        values = check_input_values(model, cells, **options)
        options.update(pinned_transform(values))
        start, stop = (0, cells.n_obs) if piece is None else shard_rows(*piece, cells.n_obs)
        outputs = predict_chunks(
            model,
            detector,
            cells.chunk,
            start,
            stop,
            chunk_size=chunk_size,
            batch_size=batch_size,
            predictor=predictor,
            **options,
        )
        if outputs is None:  # another process of a multi-process run: the first one writes
            return {}
        extra = {"input_file": cells.identity(), "run_digest": _run_digest(model.run_dir)}
        if piece is not None:
            extra["shard"] = {"index": piece[0], "count": piece[1], "start": int(start), "stop": int(stop)}
            logger.info("piece %d/%d: cells %d-%d of %d", piece[0], piece[1], start, stop - 1, cells.n_obs)
        annotations = _annotations_adata(cells.obs.index[start:stop])
        annotate(
            annotations,
            model,
            outputs,
            detector,
            key_added=key_added,
            batch_size=batch_size,
            values=values,
            extra_params=extra,
        )
        label_key = annotations.uns[key_added]["params"].get("label_key")
        labels = cells.obs[label_key].iloc[start:stop] if label_key and label_key in cells.obs else None
    finally:
        cells.close()
    written: dict[str, Path] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    if _wants_umap(umap, annotations.n_obs):
        plotted = plot_umap(annotations, png, key_added=key_added, labels=labels)
        if plotted is not None:
            written["umap"] = plotted
    try:
        if annotations_only:
            write_annotations(annotations, out, key_added=key_added, compression=compression)
            written["csv"] = table_path(out)
        else:
            write_annotated_copy(input, annotations, out, key_added=key_added, compression=compression)
    except BaseException:  # disk full, interrupted, ...: no plot of an output that was not written
        if "umap" in written:
            written["umap"].unlink(missing_ok=True)
        raise
    written["h5ad"] = out
    return written


def _annotations_adata(names: Any) -> ad.AnnData:
    import anndata as ad

    from cellformer.data.file_cells import obs_frame

    return ad.AnnData(obs=obs_frame(names))


def _wants_umap(umap: bool | None, n_obs: int) -> bool:
    if umap is None and n_obs > UMAP_MAX_CELLS:
        logger.info(
            "no UMAP: %d cells is more than %d (pass --umap / umap=True to draw it anyway)",
            n_obs,
            UMAP_MAX_CELLS,
        )
        return False
    return umap is not False


def _run_digest(run_dir: str | Path) -> str:
    """What identifies a run's files (its manifest digest; the weights' SHA-256 for a run without one)."""
    from cellformer.integrity import digest, read_manifest, sha256

    manifest = read_manifest(run_dir)
    if manifest is not None:
        return digest(manifest)
    weights = [p for p in sorted(Path(run_dir).iterdir()) if p.suffix in (".safetensors", ".joblib", ".npz")]
    return sha256(weights[0]) if weights else str(Path(run_dir).resolve())


def _predict_file_in_memory(
    run_dir: str | Path,
    input: Path,
    out: Path,
    png: Path,
    piece: tuple[int, int] | None,
    annotations_only: bool,
    umap: bool | None,
    setup: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Path]:
    """An .h5ad in an old layout (anndata < 0.8) cannot be read in chunks: read whole, as anndata does."""
    import anndata as ad

    from cellformer.atomic import atomic_path

    if piece is not None or annotations_only:
        raise InputError(
            f"{input} is in an old .h5ad layout (anndata < 0.8) that cannot be read in pieces; re-save it with "
            "a current anndata (anndata.read_h5ad(path).write_h5ad(new_path)) to use --shard or --annotations-only"
        )
    logger.info("%s is in an old .h5ad layout (anndata < 0.8): read whole", input)
    try:
        adata = ad.read_h5ad(input)
    except OSError as exc:
        raise InputError(
            f"cannot read {input} as an .h5ad file ({exc}); re-save it with anndata's write_h5ad"
        ) from None
    key_added = setup["key_added"]
    setup = {k: v for k, v in setup.items() if k not in ("key_added",)}
    annotated = predict(adata, run_dir, key_added=key_added, **setup, **options)
    if setup["devices"] * setup["num_nodes"] > 1 and not is_primary_process():
        return {}  # the first process writes
    written = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    if _wants_umap(umap, annotated.n_obs):
        plotted = plot_umap(annotated, png, key_added=key_added)
        if plotted is not None:
            written["umap"] = plotted
    try:
        with atomic_path(out) as tmp:
            annotated.write_h5ad(tmp, compression="gzip")
    except BaseException:
        if "umap" in written:
            written["umap"].unlink(missing_ok=True)
        raise
    written["h5ad"] = out
    return written


def plot_umap(
    adata: ad.AnnData,
    path: str | Path,
    *,
    key_added: str = "cellformer",
    seed: int = 0,
    labels: Any = None,
) -> Path | None:
    """UMAP of ``obsm['X_<key>']`` coloured by predicted (and, when present, true) label; adds ``obsm['X_<key>_umap']``.

    Returns the PNG path, or ``None`` when there are too few cells or no embedding.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cellformer.atomic import atomic_path

    embedding = adata.obsm.get(f"X_{key_added}")
    if embedding is None or adata.n_obs < 10:
        logger.warning(
            "no UMAP: %s", "the model has no embedding" if embedding is None else "fewer than 10 cells"
        )
        return None
    import umap

    n_neighbors = int(min(15, adata.n_obs - 1))
    with torch_threads_kept():  # umap's numba kernels reset torch's thread count
        coords = umap.UMAP(n_neighbors=n_neighbors, random_state=seed, n_jobs=1).fit_transform(embedding)
    adata.obsm[f"X_{key_added}_umap"] = coords.astype(np.float32)
    panels = [("predicted", adata.obs[f"{key_added}_prediction"])]
    label_key = adata.uns[key_added]["params"].get("label_key")
    if labels is None and label_key and label_key in adata.obs:
        labels = adata.obs[label_key]
    if labels is not None:
        panels.append((f"true ({label_key})", np.asarray(labels).astype(str)))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels) + 2, 6), squeeze=False)
    unknown = adata.obs[f"{key_added}_unknown"].to_numpy()
    names = [str(c) for c in adata.uns[key_added]["classes"]]  # one colour per label in both panels
    for _, labels in panels[1:]:
        names += sorted(set(np.asarray(labels, dtype=str).tolist()) - set(names))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    colour = {name: cmap(i % cmap.N) for i, name in enumerate(names)}
    for ax, (title, labels) in zip(axes[0], panels, strict=True):
        labels = np.asarray(labels, dtype=str)
        for name in names:
            mask = labels == name
            if mask.any():
                ax.scatter(
                    coords[mask, 0], coords[mask, 1], s=6, color=colour[name], label=name, linewidths=0
                )
        if title == "predicted" and unknown.any():
            ax.scatter(
                coords[unknown, 0],
                coords[unknown, 1],
                s=14,
                facecolors="none",
                edgecolors="black",
                linewidths=0.5,
                label="unknown (flagged)",
            )
        ax.set_title(f"{title} label")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    kind = adata.uns[key_added]["params"]["kind"]
    fig.suptitle(f"{kind} embedding ({adata.n_obs} cells)")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
