"""``cellformer prepare``: an ``.h5ad`` in, a tokenized, split dataset directory out.

The steps, each in its own module::

    read (backed, chunked) -> validate (labels, genes, values) -> qc (scanpy) -> vocab (+ test alignment)
    -> splits (stratified, seeded) -> tokenizer fit on training cells -> tokenize all cells (parallel)
    -> write the prepared directory (docs/design.md), meta.json last, renamed into place atomically.

Nothing is ever written to the input files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellformer.atomic import atomic_directory, check_writable, write_json
from cellformer.config import PrepareConfig
from cellformer.data import leakage, qc
from cellformer.data.labels import check_class_count, check_test_labels, listing
from cellformer.data.read import H5adReader
from cellformer.data.splits import stratified_split
from cellformer.data.store import TokenStoreWriter
from cellformer.data.validate import check_gene_names, decide_transform, labels_as_strings
from cellformer.data.view import FileView, column_map
from cellformer.data.vocab import gene_overlap, write_vocab
from cellformer.errors import ConfigError, InputError
from cellformer.integrity import write_manifest
from cellformer.preparation.prepared import FORMAT, FORMAT_VERSION, PreparedData
from cellformer.provenance import cellformer_version, file_fingerprint, now_iso, package_versions
from cellformer.text import natural_key, plural
from cellformer.timecourse import ancestors
from cellformer.timecourse.previous import make_previous_source, open_layer
from cellformer.tokenize.base import Tokenizer, get_tokenizer_class
from cellformer.tokenize.context import ContextVocab, context_value_id, covariate_strings
from cellformer.tokenize.parallel import transform_chunks
from cellformer.tokens import N_SPECIAL

log = logging.getLogger(__name__)


def prepare(
    input: str | Path,
    *,
    out: str | Path,
    label_key: str = "cell_type",
    test: str | Path | None = None,
    unlabelled: Sequence[str | Path] = (),
    overwrite: bool = False,
    **options: Any,
) -> PreparedData:
    """Prepare ``input`` (and optionally a separate ``test`` file) into the directory ``out``.

    Parameters
    ----------
    input
        Training ``.h5ad`` (read in chunks, never modified). Without ``test`` it is split
        train/val/test (70/15/15 by default), stratified by label.
    out
        Output directory (see ``docs/design.md``); refused if it exists unless ``overwrite``.
    label_key
        ``obs`` column with the cell-type labels (strings, categoricals or integers).
    test
        A separate ``.h5ad`` split 60/40 into validation/test; its genes are aligned to ``input``'s.
    unlabelled
        ``.h5ad`` files of cells without labels (no label column needed), QC'd, aligned to ``input``'s
        genes and tokenized like the rest into the split ``unlabelled``, for ``train --pretrain-epochs``
        (masked-gene pretraining on the training and these cells). Best: cells of the same tissue.
    overwrite
        Replace an existing ``out`` (only once the new one is complete).
    **options
        Any other :class:`~cellformer.config.PrepareConfig` field (``layer``, ``gene_key``,
        ``input_normalized``, ``tokenizer``, ``max_genes``, ``min_genes``, ``doublets``, ``seed``,
        ``workers``, ``batch_key`` / ``context_keys`` for context tokens, ...).

    Returns
    -------
    The prepared dataset, opened read-only.
    """
    config = PrepareConfig.from_dict({"label_key": label_key, **options})
    return prepare_with_config(
        input, out=out, config=config, test=test, unlabelled=unlabelled, overwrite=overwrite
    )


@dataclasses.dataclass
class _Input:
    """One input file after validation and QC."""

    role: str  # "train" (the main input), "test" (the --test file) or "unlabelled" (--unlabelled files)
    reader: H5adReader
    sha256: str
    labels: np.ndarray  # str per file row (None where missing)
    genes: np.ndarray
    transform: str
    kept: np.ndarray  # file rows passing QC, sorted
    scan: qc.FileScan
    qc_report: dict[str, Any]
    source: str = ""  # the name cells.csv.gz and qc.json use for this file
    covariates: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # kept cells, str values


def prepare_with_config(
    input: str | Path,
    *,
    out: str | Path,
    config: PrepareConfig,
    test: str | Path | None = None,
    unlabelled: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> PreparedData:
    """:func:`prepare` with a ready :class:`PrepareConfig`."""
    out = Path(out)
    unlabelled = [Path(path) for path in unlabelled]
    if unlabelled and config.time_key is not None:
        raise ConfigError(
            "--unlabelled cannot be combined with --time-key (unlabelled cells have no ancestors here); "
            "prepare the time course without --unlabelled"
        )
    for path in (input, test, *unlabelled):
        if path is not None and Path(path).resolve().is_relative_to(out.resolve()):
            raise ConfigError(f"--out {out} would contain or replace the input {path}; choose another --out")
    if out.exists() and not overwrite:
        raise ConfigError(f"output directory {out} already exists; choose another --out or pass --overwrite")
    get_tokenizer_class(config.tokenizer)  # unknown names fail before any reading
    check_writable(out)  # a read-only or forbidden location fails now, not after the work
    if config.input_transform != "auto" and not config.input_normalized:
        raise ConfigError(
            f"--input-transform {config.input_transform} describes normalized values: add --input-normalized "
            "(raw counts are always used as they are)"
        )
    with contextlib.ExitStack() as stack:
        stack.enter_context(_output_race(out))  # first in, last out: sees the final rename fail
        inputs = [_load_input(Path(input), "train", config, stack)]
        if test is not None:
            inputs.append(_load_input(Path(test), "test", config, stack))
        inputs += [_load_input(path, "unlabelled", config, stack) for path in unlabelled]
        _name_sources(inputs)
        train_in = inputs[0]
        labelled = [item for item in inputs if item.role != "unlabelled"]
        test_in = labelled[1] if len(labelled) > 1 else None
        leakage_report = leakage.check_inputs(
            train_in, test_in, [i for i in inputs if i.role == "unlabelled"]
        )

        vocab, gene_report = _vocabulary(train_in, config)
        views, overlap = _views(inputs, vocab, config)

        splits, split_report = _split(labelled, config)
        labels = np.concatenate([item.labels[item.kept] for item in labelled])
        classes, unseen, label_ids = _classes(labels, splits["train"], train_in)
        if test_in is not None:  # labels named another way (1..16 vs class_1..16): every test cell "unseen"
            check_test_labels(classes, test_in.labels[test_in.kept], test_in.reader.path, config.label_key)
        n_unlabelled = sum(len(item.kept) for item in inputs if item.role == "unlabelled")
        if n_unlabelled:  # after every labelled cell, label -1 (cellformer.training.data.labelled_rows)
            splits["unlabelled"] = np.arange(len(labels), len(labels) + n_unlabelled, dtype=np.int64)
            split_report["sizes"] = {name: int(len(rows)) for name, rows in splits.items()}
            labels = np.concatenate([labels, np.full(n_unlabelled, None, dtype=object)])
            label_ids = np.concatenate([label_ids, np.full(n_unlabelled, -1, dtype=np.int64)])

        times = None  # --time-key: previous profiles from ancestor cells (cellformer.timecourse.ancestors)
        if config.time_key is not None:
            times = [ancestors.read_times(item.reader, config.time_key, item.kept) for item in inputs]
            ancestors.check_label_not_function_of_time(
                labels[splits["train"]],
                times[0].iloc[train_in.kept[splits["train"]]].to_numpy(),
                config.label_key,
                config.time_key,
            )

        context, context_ids = _context(inputs, splits, len(vocab))
        tokenizer = get_tokenizer_class(config.tokenizer).from_config(config)
        train_file_rows = train_in.kept[splits["train"]]
        log.info("fitting the %s tokenizer on %d training cells", config.tokenizer, len(train_file_rows))
        tokenizer.fit(views[0].matrices(train_file_rows))

        qc_report = {"files": {item.source: item.qc_report for item in inputs}, "genes": gene_report}
        for line in qc.summary_lines(qc_report):
            log.info(line)

        with atomic_directory(out, overwrite=overwrite) as tmp:
            mapping = None
            if times is not None:
                mapping = ancestors.fit_mapping(
                    config,
                    views[0],
                    train_file_rows,
                    times[0].iloc[train_file_rows],
                    tmp / ancestors.MAPPING_DIR,
                )
            cell_hashes = leakage.CellHashes(views, len(vocab), has_test=test_in is not None)
            lengths = _write_tokens(
                tmp, tokenizer, views, config, mapping, times, context, context_ids, cell_hashes
            )
            leakage.check_contents(inputs, cell_hashes, splits, leakage_report)
            np.save(tmp / leakage.HASH_FILE, np.concatenate(cell_hashes.per_file))
            np.save(tmp / "labels.npy", label_ids)
            np.savez(tmp / "splits.npz", **splits)
            write_json(tmp / "classes.json", {"classes": classes, "unseen": unseen})
            write_vocab(tmp / "vocab.json", vocab, context=None if context is None else context.to_json())
            tokenizer.save(tmp / "tokenizer")
            _write_cells(tmp / "cells.csv.gz", inputs, splits, labels)
            write_json(tmp / "qc.json", qc_report)
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "cellformer_version": cellformer_version(),
                "config": config.to_dict(),
                "seed": config.seed,
                "versions": package_versions(),
                "inputs": [_input_record(item) for item in inputs],
                "n_cells": int(len(labels)),
                "n_genes": len(vocab),
                "max_length": int(lengths.max(initial=0)),
                "has_values": bool(tokenizer.has_values),
                # value ids the model's value embedding needs (context tokens take one past the tokenizer's)
                "n_values": _n_values(tokenizer, context),
                "context": None
                if context is None
                else {
                    "keys": context.keys,
                    "n_tokens": context.n_tokens,
                    "first_id": context.first_id,
                    "value_id": context_value_id(tokenizer),
                },
                "tokenizer": tokenizer.name,
                "label_key": config.label_key,
                "n_classes": len(classes),
                "unseen_labels": {label: int((labels == label).sum()) for label in unseen},
                "splits": split_report,
                "gene_overlap": overlap,
                "qc": qc_report,
                "leakage": leakage_report,
                "created": now_iso(),
            }
            write_json(tmp / "meta.json", meta)  # its presence marks a complete dataset
            write_manifest(tmp, "prepared")  # sizes and SHA-256 of every file (cellformer.integrity)
    sizes = ", ".join(f"{name} {len(rows)}" for name, rows in splits.items())
    log.info(
        "prepared %s, %s, %s into %s (%s)",
        plural(len(labels), "cell"),
        plural(len(vocab), "gene"),
        plural(len(classes), "class", "classes"),
        out,
        sizes,
    )
    if unseen:
        log.warning(
            "labels only outside the training split (kept, ids >= %d): %s", len(classes), ", ".join(unseen)
        )
    return PreparedData(out)


@contextlib.contextmanager
def _output_race(out: Path):
    """Another process made ``out`` while this one prepared it: one clear line, not FileExistsError."""
    try:
        yield
    except FileExistsError as exc:
        if not exc.args or Path(str(exc.args[0])) != out:
            raise
        raise ConfigError(
            f"output directory {out} was created by another process while this one was preparing it (two "
            "`prepare` runs with the same --out?); this run's result was discarded: choose another --out, "
            "or pass --overwrite to replace it"
        ) from None


def _transform_text(transform: str, config: PrepareConfig) -> str:
    if transform == "none":
        return "used as stored"
    how = "detected" if config.input_transform == "auto" else "forced by --input-transform log1p"
    return f"log1p {how}, undone with expm1"


# -- steps ----------------------------------------------------------------------------------------
def _load_input(path: Path, role: str, config: PrepareConfig, stack: contextlib.ExitStack) -> _Input:
    """Open, validate and QC one file (one streaming pass plus optional doublet detection)."""
    reader = stack.enter_context(H5adReader(path, layer=config.layer, gene_key=config.gene_key))
    if reader.n_obs == 0 or reader.n_vars == 0:
        raise InputError(f"{path} is empty ({reader.n_obs} cells x {reader.n_vars} genes)")
    if role == "unlabelled":  # no label column needed; every cell counts as present
        labels = np.full(reader.n_obs, None, dtype=object)
    else:
        labels = labels_as_strings(reader.obs_column(config.label_key), path, config.label_key)
    if role == "train":  # before any work: n_counts or cell ids as labels
        check_class_count(labels, path, config.label_key, allow_many=config.allow_many_classes)
    covariates = {key: reader.obs_column(key) for key in config.covariate_keys}  # missing: fail now
    genes = reader.gene_names()
    check_gene_names(genes, path, config.gene_key)
    if config.previous_layer is not None:  # fail before any work if the layer is missing or misshapen
        open_layer(reader, config.previous_layer).close()
    sha256 = file_fingerprint(path)

    count_qc = not config.input_normalized
    mito, mito_where = (None, "input is normalized (count-based QC skipped)")
    if count_qc and config.max_mito_fraction is not None:
        mito, mito_where = qc.find_mito_genes(reader, genes)
    min_genes = config.min_genes_for(reader.n_vars)
    scan = qc.scan_file(
        reader,
        chunk_size=config.chunk_size,
        min_genes=min_genes,
        max_mito_fraction=config.max_mito_fraction if count_qc else None,
        mito=mito,
    )
    transform = decide_transform(
        scan.values, config.input_normalized, config.input_transform, matrices=reader.matrices()
    )
    if config.input_normalized and scan.values.is_counts:
        log.warning(
            "%s of %s holds integer counts, but --input-normalized was given", reader.matrix_name, path
        )
    log.info(
        "%s: %d cells x %d genes, %s, values: %s",
        path.name,
        reader.n_obs,
        reader.n_vars,
        reader.matrix_name,
        _transform_text(transform, config),
    )

    n = reader.n_obs
    has_label = np.array([label is not None or role == "unlabelled" for label in labels], dtype=bool)
    steps = [qc.step("missing_label", True, removed_cells=int((~has_label).sum()))]
    too_few = scan.n_genes < min_genes
    steps.append(
        qc.step(
            "min_genes",
            min_genes > 0,
            threshold=min_genes,
            rule="given"
            if config.min_genes is not None
            else f"auto: 1% of the file's {reader.n_vars} genes, at most 200",
            removed_cells=int((too_few & has_label).sum()),
        )
    )
    if scan.mito_fraction is not None:
        high = ~too_few & (scan.mito_fraction > config.max_mito_fraction)
        steps.append(
            qc.step(
                "max_mito_fraction",
                True,
                threshold=config.max_mito_fraction,
                genes_from=mito_where,
                n_mito_genes=int(mito.sum()),
                removed_cells=int((high & has_label).sum()),
            )
        )
    else:
        reason = "switched off" if config.max_mito_fraction is None else mito_where
        steps.append(qc.step("max_mito_fraction", False, reason=reason))
    keep = scan.passed & has_label
    empty = keep & (scan.n_genes == 0)
    if empty.any():
        first = int(np.flatnonzero(empty)[0])
        raise InputError(
            f"{plural(int(empty.sum()), 'cell')} in {reader.matrix_name} of {path} have no counts "
            f"(e.g. cell {first}); "
            "they cannot be tokenized: remove them or keep --min-genes at 1 or more to filter them out"
        )
    if config.doublets and count_qc:
        rows = np.flatnonzero(keep)
        doublet, details = qc.detect_doublets(reader, rows, config.seed)
        keep[rows[doublet]] = False
        steps.append(
            qc.step(
                "doublets", True, method="scanpy.pp.scrublet", removed_cells=int(doublet.sum()), **details
            )
        )
    else:
        reason = (
            "switched off; use --doublets" if not config.doublets else "input is normalized (needs counts)"
        )
        steps.append(qc.step("doublets", False, reason=reason))
    kept = np.flatnonzero(keep).astype(np.int64)
    if len(kept) == 0:
        raise InputError(
            f"no cells of {path} pass QC (min_genes={min_genes}, max_mito_fraction="
            f"{config.max_mito_fraction}); lower --min-genes or switch the mitochondrial filter off"
        )
    if len(kept) < 0.5 * int(has_label.sum()):
        log.warning(
            "QC keeps only %d of %d labelled cells of %s (see qc.json; min_genes=%d, max_mito_fraction=%s): "
            "check the thresholds suit this data (--min-genes, --max-mito-fraction)",
            len(kept),
            int(has_label.sum()),
            path,
            min_genes,
            config.max_mito_fraction,
        )
    report = {"n_cells": n, "kept_cells": int(len(kept)), "steps": steps, "value_transform": transform}
    names = reader.obs_names()[kept] if covariates else None
    covariates = {
        key: covariate_strings(np.asarray(values)[kept], key=key, where=str(path), names=names)
        for key, values in covariates.items()
    }
    return _Input(role, reader, sha256, labels, genes, transform, kept, scan, report, covariates=covariates)


def _name_sources(inputs: list[_Input]) -> None:
    """File names, or whole paths when two inputs share a name."""
    names = [item.reader.path.name for item in inputs]
    for item in inputs:
        unique = names.count(item.reader.path.name) == 1
        item.source = item.reader.path.name if unique else str(item.reader.path)


def _views(
    inputs: list[_Input], vocab: list[str], config: PrepareConfig
) -> tuple[list[FileView], dict[str, Any] | None]:
    """Each file's kept cells aligned to ``vocab``; a test file must share enough genes."""
    views, overlap = [], None
    for item in inputs:
        if item.role != "train":
            shared = gene_overlap(
                vocab, item.genes, path=item.reader.path, min_overlap=config.min_gene_overlap
            )
            log.info(
                "%s file %s: %d of %d training genes present (%.1f%%)",
                item.role,
                item.source,
                shared["shared"],
                len(vocab),
                100 * shared["fraction"],
            )
            if item.role == "test":
                overlap = shared
        col_map = column_map(item.genes, vocab)
        views.append(
            FileView(
                item.reader, item.source, item.kept, col_map, len(vocab), item.transform, config.chunk_size
            )
        )
    return views, overlap


def _input_record(item: _Input) -> dict[str, Any]:
    """What meta.json records of an input file (its sha256 identifies it)."""
    return {
        "path": str(item.reader.path.resolve()),
        "source": item.source,
        "role": item.role,
        "sha256": item.sha256,
        "n_obs": item.reader.n_obs,
        "n_vars": item.reader.n_vars,
        "matrix": item.reader.matrix_name,
        "value_transform": item.transform,
        "n_cells_kept": int(len(item.kept)),
    }


def _vocabulary(train: _Input, config: PrepareConfig) -> tuple[list[str], dict[str, Any]]:
    """Training-file genes expressed in at least ``min_cells`` QC-passing cells, in file order."""
    keep = train.scan.gene_cells >= config.min_cells  # min_cells=0 keeps every gene
    vocab = [str(g) for g in train.genes[keep]]
    if not vocab:
        raise InputError(
            f"no gene of {train.reader.path} is expressed in {config.min_cells} cells; lower --min-cells"
        )
    report = {
        "n_genes": int(len(train.genes)),
        "kept_genes": len(vocab),
        "min_cells": {
            "enabled": config.min_cells > 0,
            "threshold": config.min_cells,
            "removed_genes": int((~keep).sum()),
        },
    }
    return vocab, report


def _split(inputs: list[_Input], config: PrepareConfig) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Store-row indices of train/val/test (the train file's kept cells first, then the test file's)."""
    train = inputs[0]
    if len(inputs) == 1:
        fractions = {
            "train": config.train_fraction,
            "val": config.val_fraction,
            "test": 1.0 - config.train_fraction - config.val_fraction,
        }
        splits, report = stratified_split(train.labels[train.kept], fractions, home="train", seed=config.seed)
        report["strategy"] = "one file: stratified train/val/test"
    else:
        test = inputs[1]
        offset = len(train.kept)
        fractions = {"val": config.test_val_fraction, "test": 1.0 - config.test_val_fraction}
        parts, report = stratified_split(test.labels[test.kept], fractions, home="test", seed=config.seed)
        splits = {
            "train": np.arange(offset, dtype=np.int64),
            "val": parts["val"] + offset,
            "test": parts["test"] + offset,
        }
        report["strategy"] = "test file: all of the input is train; the test file is split val/test"
        report["sizes"] = {name: int(len(rows)) for name, rows in splits.items()}
    for name, rows in splits.items():
        if len(rows) == 0:
            log.warning("the %s split is empty", name)
    small = report["small_classes"]
    if len(small) > 3:  # one line, not one per class
        log.warning(
            "%d classes have too few cells to stratify and are each kept whole in one split: %s",
            len(small),
            listing([f"{label} ({info['n_cells']} in {info['all_in']})" for label, info in small.items()]),
        )
        small = {}
    for label, info in small.items():
        log.warning(
            "class %r has only %s: too few to stratify, all in %s",
            label,
            plural(info["n_cells"], "cell"),
            info["all_in"],
        )
    return splits, report


def _context(
    inputs: list[_Input], splits: dict[str, np.ndarray], n_genes: int
) -> tuple[ContextVocab | None, list[np.ndarray] | None]:
    """Context-token vocabulary from the training cells' covariate values, and each input's token ids."""
    if not inputs[0].covariates:
        return None, None
    keys = list(inputs[0].covariates)
    values = {key: np.concatenate([item.covariates[key] for item in inputs]) for key in keys}
    context = ContextVocab.fit({key: values[key][splits["train"]] for key in keys}, N_SPECIAL + n_genes)
    n_train = len(splits["train"])
    for covariate in context.covariates:
        log.info("context tokens for '%s': %d categories", covariate.key, len(covariate.categories))
        if n_train >= 20 and len(covariate.categories) > n_train / 2:
            log.warning(
                "covariate '%s' has %d distinct values among %d training cells: context tokens are meant for "
                "categorical covariates with few values (batch, assay, ...), is it the right column?",
                covariate.key,
                len(covariate.categories),
                n_train,
            )
    ids = [
        context.encode(item.covariates, where=f"{item.source} (cells outside the training split)")
        for item in inputs
    ]
    return context, ids


def _n_values(tokenizer: Tokenizer, context: ContextVocab | None) -> int:
    """Rows of the value embedding: the tokenizer's value ids, plus one for context tokens; 0 without values."""
    if not tokenizer.has_values:
        return 0
    return int(tokenizer.value_vocab_size) + (1 if context is not None else 0)


def _classes(
    labels: np.ndarray, train_rows: np.ndarray, train: _Input
) -> tuple[list[str], list[str], np.ndarray]:
    """Sorted training classes, labels seen only outside train, and each cell's integer label."""
    classes = sorted(set(labels[train_rows].tolist()), key=natural_key)
    if len(classes) < 2:
        raise InputError(
            f"label column in {train.reader.path} has a single class ({', '.join(classes)}) among the training "
            "cells; a classifier needs at least two: check --label-key"
        )
    unseen = sorted(set(labels.tolist()) - set(classes), key=natural_key)
    index = {label: i for i, label in enumerate(classes + unseen)}
    return classes, unseen, np.array([index[label] for label in labels.tolist()], dtype=np.int64)


def _write_tokens(
    directory: Path,
    tokenizer: Tokenizer,
    views: list[FileView],
    config: PrepareConfig,
    mapping: Any = None,
    times: list[Any] | None = None,
    context: ContextVocab | None = None,
    context_ids: list[np.ndarray] | None = None,
    hashes: leakage.CellHashes | None = None,
) -> np.ndarray:
    """Tokenize every kept cell of every file into ``directory/tokens``; returns the lengths.

    ``mapping`` and ``times`` (one time column per view) are the ancestor mapping for ``--time-key``;
    ``context`` and ``context_ids`` (one ``(cells, covariates)`` array per view) add context tokens;
    ``hashes`` records each cell's content hash (cellformer.data.leakage)."""
    from tqdm.auto import tqdm

    writer = TokenStoreWriter(directory, tokenizer.has_values)
    bar = tqdm(
        total=sum(len(v.rows) for v in views), desc="tokenizing", unit="cells", leave=False, disable=None
    )
    for i, view in enumerate(views):
        previous = make_previous_source(config, view, mapping, None if times is None else times[i])
        try:
            stream = view.iter_chunks()
            if hashes is not None:
                stream = hashes.wrap(i, stream)
            chunks = ((X, None if previous is None else previous(view, rows)) for rows, X in stream)
            done = 0
            for cells in transform_chunks(tokenizer, chunks, config.workers):
                if context is not None:
                    ids = context_ids[i][done : done + len(cells)]
                    cells = context.insert(cells, ids, context_value_id(tokenizer))
                done += len(cells)
                writer.append(cells)
                bar.update(len(cells))
        finally:
            if previous is not None:
                previous.close()
    bar.close()
    return writer.close()


def _write_cells(path: Path, inputs: list[_Input], splits: dict[str, np.ndarray], labels: np.ndarray) -> None:
    import pandas as pd

    names = np.concatenate([item.reader.obs_names()[item.kept] for item in inputs])
    sources = np.concatenate([np.full(len(item.kept), item.source, dtype=object) for item in inputs])
    split = np.empty(len(labels), dtype=object)
    for name, rows in splits.items():
        split[rows] = name
    frame = pd.DataFrame({"obs_name": names, "source": sources, "split": split, "label": labels})
    frame.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})
