"""``cellformer.predict``: a run directory + an AnnData in memory -> an annotated copy of it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cellformer.calibration.unknown import DEFAULT_QUANTILE
from cellformer.prediction.annotate import annotate
from cellformer.prediction.outputs import check_input_values, predict_chunks
from cellformer.prediction.run_setup import DEFAULT_CHUNK_SIZE, setup_run

if TYPE_CHECKING:
    import anndata as ad


def predict(
    adata: ad.AnnData,
    run_dir: str | Path,
    *,
    batch_size: int = 256,
    key_added: str = "cellformer",
    copy: bool = True,
    layer: str | None = None,
    gene_key: str | None = None,
    min_gene_overlap: float | None = None,
    unknown_quantile: float = DEFAULT_QUANTILE,
    source: str | Path | None = None,
    input_normalized: bool | None = None,
    input_transform: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    accelerator: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
) -> ad.AnnData | None:
    """Annotate cells with a trained model's predictions.

    Parameters
    ----------
    adata
        Cells to annotate; genes are matched to the model's by name (missing genes count as zero,
        extra genes are ignored). Read the same matrix as in training (see ``layer``).
    run_dir
        A run directory from ``cellformer train`` or ``cellformer baseline``.
    batch_size
        Cells per forward pass.
    key_added
        Prefix of the keys written (see the module docstring); existing keys are replaced with a warning.
    copy
        Return an annotated copy (default) and leave ``adata`` untouched; ``False`` annotates ``adata``
        in place and returns ``None``.
    layer, gene_key
        Override the matrix (``"raw.X"`` for ``adata.raw``) and gene-name column the model was trained with.
    min_gene_overlap
        Minimum fraction (in (0, 1]) of the model's genes that must be present (default: the training
        setting, ``prepare``'s ``min_gene_overlap``, 0.5 unless changed).
    unknown_quantile
        Quantile of the validation cells' unknown scores used as the threshold: about
        ``1 - unknown_quantile`` of cells of known types are flagged by design (default 0.91: ~9 %).
    source
        What error messages call ``adata`` (e.g. the file it was read from; default "the input AnnData").
    input_normalized, input_transform
        The values are normalized, not raw counts (``prepare``'s options of the same names): log1p is
        detected (``input_transform="auto"``) or asserted (``"log1p"``) and undone with ``expm1``;
        ``"none"`` uses the values as they are. ``None``: as the run's training data was read. A run
        trained on counts then sees the de-logged values, which it tokenizes as it would their counts
        (see ``docs/predict.md``). The transform applied is logged and recorded in ``params['input']``.
    chunk_size
        Cells aligned, tokenized and predicted at a time (the same results for any value;
        :func:`predict_file` reads a file this many cells at a time).
    accelerator, devices, num_nodes
        Where a transformer's forward pass runs. One process (the default): in this one, on a GPU where
        there is one (``"auto"``), or on the CPU / the first CUDA GPU (``"cpu"`` / ``"gpu"``).
        ``devices * num_nodes > 1``: that many processes through Lightning's ``Trainer.predict``
        (:mod:`cellformer.training.multi_device`; ``devices`` per node): Lightning starts the script again
        once per extra device (or a scheduler such as SLURM starts them all), each process predicts a
        share of each chunk, and every process returns the same annotated copy (so write files from the
        first process only). The results are those of one process. Baseline runs have no forward pass to
        spread: ``devices * num_nodes > 1`` is refused for them.

    Returns
    -------
    The annotated copy, or ``None`` with ``copy=False``.
    """
    from cellformer.data.align import pinned_transform

    model, detector, options, predictor = setup_run(
        run_dir,
        batch_size=batch_size,
        key_added=key_added,
        chunk_size=chunk_size,
        unknown_quantile=unknown_quantile,
        source=source,
        layer=layer,
        gene_key=gene_key,
        min_gene_overlap=min_gene_overlap,
        input_normalized=input_normalized,
        input_transform=input_transform,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
    )
    values = check_input_values(model, adata, **options)
    options.update(pinned_transform(values))  # every chunk gets the transform chosen on the whole matrix
    cells = predict_chunks(
        model,
        detector,
        lambda start, stop: adata[start:stop],
        0,
        adata.n_obs,
        chunk_size=chunk_size,
        batch_size=batch_size,
        predictor=predictor,
        every_process=True,
        **options,
    )
    assert cells is not None
    target = adata.copy() if copy else adata
    annotate(target, model, cells, detector, key_added=key_added, batch_size=batch_size, values=values)
    return target if copy else None
