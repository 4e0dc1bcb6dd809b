"""Integrity of prepared datasets and run directories: a manifest of their files, verified on load.

``prepare``, ``train`` and ``baseline`` end by writing ``manifest.json`` beside their outputs (inside the
directory that is renamed into place, or right after the last file of a run)::

    {"format": "cellformer-manifest", "format_version": 1, "kind": "prepared" | "run",
     "files": {"meta.json": {"size": 4489, "sha256": "..."}, "tokens/ids.bin": {...}, ...}}

:func:`verify` checks every listed file (present, same size, same SHA-256) and raises
:class:`~cellformer.errors.RunDirError` naming the first file that differs and what to do. Files added
later are ignored; a run's evaluation outputs (``metrics/``, ``predictions/``, ``plots/``) and training
state (``checkpoints/``, ``wandb/``) are not part of it. ``config.json`` of a run is compared without its
``prepared.path`` (a location hint, edited when data move). A prepared dataset or finished run without
a manifest is refused: another cellformer version made it, or its writing was interrupted.

Hashing is cheap on reload: a file's SHA-256 is remembered per (device, inode, size, mtime, ctime) in
the process, and for files of 16 MiB and more also across processes in ``$CELLFORMER_CACHE_DIR``
(default ``~/.cache/cellformer``) ``/sha256.json``. Any write changes the mtime or ctime, so a changed
file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from cellformer.errors import RunDirError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "cellformer-manifest"
FORMAT_VERSION = 1
# top-level entries of a run directory that are not part of the trained run
RUN_EXCLUDED = ("metrics", "predictions", "plots", "checkpoints", "wandb", "lightning_logs")
# keys ignored when hashing a JSON file: (file, key path)
_IGNORED_KEYS = {"config.json": ("prepared", "path")}
PERSISTENT_MIN_BYTES = 16 << 20

_MEMORY: dict[tuple, str] = {}


# -- hashing ------------------------------------------------------------------------------------
def _stat_key(path: Path) -> tuple:
    """The file's identity and state: renaming its folder (prepare's last step) keeps it, any write or
    copy changes it."""
    stat = path.stat()
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _cache_file() -> Path:
    base = os.environ.get("CELLFORMER_CACHE_DIR") or os.path.join(Path.home(), ".cache", "cellformer")
    return Path(base) / "sha256.json"


def _read_cache() -> dict[str, str]:
    try:
        cache = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _remember(key: str, digest: str) -> None:
    """Best effort: a cache that cannot be written only costs hashing again."""
    from cellformer.atomic import write_json

    cache = _read_cache()
    cache[key] = digest
    if len(cache) > 4096:
        cache = dict(list(cache.items())[-4096:])
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        write_json(_cache_file(), cache)
    except OSError:
        pass


def sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, remembered while the file's size and times stay the same."""
    from cellformer.provenance import file_fingerprint

    path = Path(path)
    key = _stat_key(path)
    if key in _MEMORY:
        return _MEMORY[key]
    persistent = key[2] >= PERSISTENT_MIN_BYTES
    text_key = json.dumps(key)
    digest = _read_cache().get(text_key) if persistent else None
    if digest is None:
        digest = file_fingerprint(path)
        if persistent:
            _remember(text_key, digest)
    _MEMORY[key] = digest
    return digest


def _json_sha256(path: Path, ignored: tuple[str, ...]) -> str | None:
    """SHA-256 of a JSON file's content without one key; ``None`` when it is not valid JSON."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    node = obj
    for key in ignored[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(ignored[-1], None)
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _entry(directory: Path, rel: str) -> dict[str, Any]:
    path = directory / rel
    if rel in _IGNORED_KEYS:
        return {
            "json_sha256": _json_sha256(path, _IGNORED_KEYS[rel]),
            "ignores": ".".join(_IGNORED_KEYS[rel]),
        }
    return {"size": path.stat().st_size, "sha256": sha256(path)}


# -- writing ------------------------------------------------------------------------------------
def _files(directory: Path, kind: str) -> list[str]:
    excluded = RUN_EXCLUDED if kind == "run" else ()
    names = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if rel.parts[0] in excluded or any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and rel.as_posix() != MANIFEST:
            names.append(rel.as_posix())
    return names


def write_manifest(directory: str | Path, kind: str) -> dict[str, Any]:
    """Record every file of ``directory`` (a ``"prepared"`` dataset or a ``"run"``) in ``manifest.json``."""
    from cellformer.atomic import write_json

    directory = Path(directory)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "files": {rel: _entry(directory, rel) for rel in _files(directory, kind)},
    }
    write_json(directory / MANIFEST, manifest)
    return manifest


def digest(manifest: dict[str, Any]) -> str:
    """One SHA-256 for a manifest's files: equal digests mean the same files with the same content."""
    return hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()


# -- verifying ----------------------------------------------------------------------------------
def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """``manifest.json`` of ``directory``; ``None`` when it has none."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunDirError(
            f"{path} is unreadable or truncated ({type(exc).__name__}): the directory is damaged; "
            "copy it again from a good copy or make it again"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RunDirError(f"{path} is not a cellformer manifest; copy the directory again or make it again")
    return manifest


def problems(directory: str | Path, manifest: dict[str, Any]) -> list[str]:
    """What differs between ``directory`` and its manifest, one phrase per file (empty: all intact)."""
    directory = Path(directory)
    found = []
    for rel, expected in manifest.get("files", {}).items():
        path = directory / rel
        if not path.is_file():
            found.append(f"{rel} is missing")
        elif "json_sha256" in expected:
            actual = _json_sha256(path, tuple(expected.get("ignores", "").split(".")))
            if actual is None:
                found.append(f"{rel} is no longer valid JSON (truncated?)")
            elif actual != expected["json_sha256"]:
                found.append(f"{rel} changed (its content differs from {MANIFEST})")
        elif path.stat().st_size != expected["size"]:
            found.append(f"{rel} changed size ({path.stat().st_size} bytes, {expected['size']} when written)")
        elif sha256(path) != expected["sha256"]:
            found.append(f"{rel} changed (same size, but its SHA-256 differs from {MANIFEST})")
    return found


_ADVICE = {
    "prepared": "prepare it again (`cellformer prepare ... --out {path} --overwrite`) or copy it again "
    "from a good copy; runs trained on the old one must then be trained again",
    "run": "copy the run again from a good copy, or make it again (`cellformer train` / `cellformer "
    "baseline`)",
}


def verify(directory: str | Path, kind: str) -> dict[str, Any]:
    """Check ``directory`` against its manifest; returns the manifest.

    Raises
    ------
    RunDirError
        ``manifest.json`` is missing, or a listed file is missing or its size or content changed: the
        message names it and what to do.
    """
    directory = Path(directory)
    what = "prepared dataset" if kind == "prepared" else "run directory"
    manifest = read_manifest(directory)
    if manifest is None:
        again = (
            f"prepare it again (`cellformer prepare ... --out {directory} --overwrite`)"
            if kind == "prepared"
            else "train it again (`cellformer train` / `cellformer baseline`)"
        )
        raise RunDirError(
            f"{what} {directory} has no {MANIFEST}: it was made by another cellformer version, or it is "
            f"damaged or incomplete, so its files cannot be checked; {again}"
        )
    found = problems(directory, manifest)
    if found:
        more = f" (and {len(found) - 1} more file(s): {'; '.join(found[1:3])})" if len(found) > 1 else ""
        raise RunDirError(
            f"{what} {directory} is damaged or was modified after it was written: {found[0]}{more}; "
            + _ADVICE[kind].format(path=directory)
        )
    return manifest


# -- a run and its data ---------------------------------------------------------------------------
def check_trained_on(run_dir: str | Path, config: dict[str, Any], prepared: Any) -> None:
    """Refuse a prepared dataset that is not the one the run was trained on (``data_fingerprint``).

    Re-preparing into the same directory (another seed, other options, new input) gives other splits:
    the run's training cells may then sit in the "test" split, so its metrics would be meaningless.
    """
    recorded = config.get("data_fingerprint")
    if not recorded:
        raise RunDirError(
            f"run {run_dir} records no data_fingerprint in its config.json: it was made by another "
            f"cellformer version, so whether {prepared.path} is the data it was trained on cannot be "
            "checked; train it again"
        )
    if prepared.fingerprint() == recorded:
        return
    from cellformer.config import RunInput

    then = RunInput.of(config).created
    now = prepared.meta.get("created")
    when = f" (prepared {then}; the directory now holds data prepared {now})" if then and now else ""
    raise RunDirError(
        f"run {run_dir} was not trained on prepared dataset {prepared.path}: it was prepared again or "
        f"changed since{when}, so its splits differ and the run's training cells may be among its test "
        f"cells; evaluate the run on the dataset it was trained on (--prepared DIR), or train it again on "
        f"{prepared.path}"
    )


def check_copies(run_dir: str | Path, prepared: Any, names: tuple[str, ...]) -> None:
    """Refuse a run whose copies of the prepared dataset's files (``vocab.json``, ``tokenizer/`` ...)
    differ from the originals (checked by ``train --resume``)."""
    run_dir = Path(run_dir)
    for name in names:
        source = Path(prepared.path) / name
        sources = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        for original in sources:
            if not original.exists():
                continue
            rel = original.relative_to(prepared.path)
            copy = run_dir / rel
            if not copy.is_file():
                raise RunDirError(
                    f"cannot resume {run_dir}: its {rel.as_posix()} is missing (copied from {original} when "
                    "the run started); the run directory was modified: start the run again in a new --out"
                )
            if sha256(copy) != sha256(original):
                raise RunDirError(
                    f"cannot resume {run_dir}: its {rel.as_posix()} differs from {original}, copied when the "
                    "run started; the run directory was modified: start the run again in a new --out"
                )


def require_tokenizer(directory: str | Path, name: str, *, owner: str) -> Any:
    """Load the tokenizer state in ``directory``, or raise :class:`RunDirError` naming what is missing."""
    from cellformer.tokenize.base import get_tokenizer_class

    directory = Path(directory)
    try:
        return get_tokenizer_class(name).load(directory)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        detail = Path(exc.filename).name if getattr(exc, "filename", None) else str(exc) or type(exc).__name__
        missing = isinstance(exc, FileNotFoundError)
        raise RunDirError(
            f"{owner} has {'an incomplete' if missing else 'a damaged'} tokenizer state in {directory} "
            f"({'missing ' if missing else ''}{detail}): it cannot tokenize cells; "
            + ("prepare the data again" if owner.startswith("prepared") else "train the run again")
        ) from None


def predictions_digest(y_true: Any, logits: Any) -> str:
    """SHA-256 of a split's labels and predicted classes (argmax of ``logits``), as ``compare`` reads them."""
    import numpy as np

    digest_ = hashlib.sha256(np.ascontiguousarray(y_true, dtype=np.int64).tobytes())
    digest_.update(np.ascontiguousarray(np.asarray(logits).argmax(axis=1), dtype=np.int64).tobytes())
    return digest_.hexdigest()


def evaluation_record(
    run_dir: str | Path, prepared: Any, rows: Any, y_true: Any, logits: Any
) -> dict[str, Any]:
    """What ``metrics/{split}.json`` records so ``compare`` can trust it: the prepared data and cells it
    was computed on, a digest of the predictions it saved and the run's manifest digest."""
    import numpy as np

    from cellformer.data.leakage import split_cells_sha256

    hashes = prepared.cell_hashes
    cells, copies = None, None
    if hashes is not None:
        cells = split_cells_sha256(hashes, rows)
        train_rows = prepared.splits.get("train", np.zeros(0, np.int64))
        in_train = np.isin(np.asarray(rows), train_rows)
        copies = int((np.isin(hashes[rows], hashes[train_rows]) & ~in_train).sum())
        if copies:
            log.warning(
                "%d of the %d evaluated cells of %s are exact copies of training cells (duplicated cells "
                "in the input, see meta.json 'leakage'): their scores are inflated",
                copies,
                len(rows),
                prepared.path,
            )
    manifest = read_manifest(run_dir)
    return {
        "prepared_fingerprint": prepared.fingerprint(),
        "cells_sha256": cells,
        "copies_of_training_cells": copies,
        "predictions_sha256": predictions_digest(y_true, logits),
        "run_manifest": None if manifest is None else digest(manifest),
    }
