"""Read-only access to a prepared dataset directory (the output of ``cellformer prepare``)."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cellformer.atomic import read_json
from cellformer.config import RunInput
from cellformer.data.store import TokenStore
from cellformer.errors import RunDirError
from cellformer.tokenize.base import get_tokenizer_class
from cellformer.tokens import N_SPECIAL

FORMAT = "cellformer-prepared"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test", "unlabelled")  # unlabelled: prepare --unlabelled cells


class PreparedData:
    """A prepared directory: token store, labels, splits, vocabulary and tokenizer state.

    Raises :class:`RunDirError` with a clear message when the directory is missing, incomplete
    (``meta.json`` is written last) or made by an incompatible version.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_file():
            kind = "an .h5ad file" if self.path.suffix.lower() == ".h5ad" else "a file"
            raise RunDirError(
                f"{self.path} is {kind}, not a prepared dataset directory; run "
                f"`cellformer prepare {self.path} --out DIR` first and pass DIR"
            )
        if not self.path.is_dir():
            raise RunDirError(f"prepared dataset {self.path} does not exist; run `cellformer prepare` first")
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            _refuse_run_directory(self.path)
            raise RunDirError(
                f"{self.path} is not a complete prepared dataset (no meta.json; an interrupted "
                "`cellformer prepare`?); prepare it again"
            )
        from cellformer.integrity import MANIFEST, verify

        try:
            self.meta: dict[str, Any] = read_json(meta_path)
        except (OSError, ValueError):
            if (self.path / MANIFEST).exists():
                verify(self.path, "prepared")  # names what changed
            raise RunDirError(
                f"{meta_path} is unreadable or truncated (not valid JSON): the prepared dataset is damaged; "
                "prepare it again"
            ) from None
        if self.meta.get("format") != FORMAT:
            raise RunDirError(
                f"{self.path} is not a cellformer prepared dataset (meta.json format={self.meta.get('format')!r})"
            )
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise RunDirError(
                f"{self.path} was prepared with format version {self.meta.get('format_version')} "
                f"(cellformer {self.meta.get('cellformer_version')}); this cellformer reads version "
                f"{FORMAT_VERSION}: prepare it again"
            )
        for name in ("vocab.json", "classes.json", "labels.npy", "splits.npz", "tokens/offsets.npy"):
            if not (self.path / name).exists():
                raise RunDirError(
                    f"prepared dataset {self.path} is incomplete: {name} is missing; prepare it again"
                )
        # every file as written (cellformer.integrity), after the format checks: another version's
        # dataset gets the message about versions
        self.manifest = verify(self.path, "prepared")

    @cached_property
    def vocab(self) -> dict[str, Any]:
        return read_json(self.path / "vocab.json")

    @property
    def genes(self) -> list[str]:
        return list(self.vocab["genes"])

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + len(self.vocab["genes"])

    @property
    def context(self):
        """The context-token vocabulary (:class:`~cellformer.tokenize.context.ContextVocab`), or ``None``."""
        from cellformer.tokenize.context import ContextVocab

        return ContextVocab.from_vocab(self.vocab, N_SPECIAL)

    @property
    def n_context(self) -> int:
        """Context tokens after the genes (rows of the model's context embedding); 0 without covariates."""
        context = self.context
        return 0 if context is None else context.n_tokens

    @cached_property
    def _classes(self) -> dict[str, list[str]]:
        return read_json(self.path / "classes.json")

    @property
    def classes(self) -> list[str]:
        """Classes the model predicts (those in the training split)."""
        return list(self._classes["classes"])

    @property
    def unseen(self) -> list[str]:
        """Labels present only outside the training split (ids ``len(classes) + i``)."""
        return list(self._classes.get("unseen", []))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def labels(self) -> np.ndarray:
        return np.load(self.path / "labels.npy", mmap_mode="r")

    @cached_property
    def cell_hashes(self) -> np.ndarray | None:
        """Each store row's 64-bit content hash (:mod:`cellformer.data.leakage`), or ``None`` for a dataset
        prepared before the hashes were stored."""
        from cellformer.data.leakage import HASH_FILE

        path = self.path / HASH_FILE
        return np.load(path) if path.exists() else None

    @cached_property
    def splits(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "splits.npz") as npz:
            return {name: npz[name] for name in SPLITS if name in npz}

    @cached_property
    def store(self) -> TokenStore:
        return TokenStore(self.path)

    @property
    def has_values(self) -> bool:
        return bool(self.meta.get("has_values", False))

    @property
    def value_bins(self) -> int | None:
        """``n_bins`` of value tokens (ids ``1 .. n_bins - 1`` are expression bins); ``None`` without values."""
        if not self.has_values:
            return None
        return int(self.meta["config"]["n_bins"])

    def tokenizer(self):
        """The fitted tokenizer saved with the dataset."""
        from cellformer.integrity import require_tokenizer

        get_tokenizer_class(self.meta.get("tokenizer", "rank"))  # an unknown name: its own message
        return require_tokenizer(
            self.path / "tokenizer", self.meta.get("tokenizer", "rank"), owner=f"prepared dataset {self.path}"
        )

    def fingerprint(self) -> str:
        """SHA-256 over the metadata, offsets, labels and splits (not the large token file).

        Recorded in every run directory (``config.json["data_fingerprint"]``).
        """
        digest = hashlib.sha256()
        for name in ("meta.json", "tokens/offsets.npy", "labels.npy", "splits.npz"):
            digest.update((self.path / name).read_bytes())
        return digest.hexdigest()

    def split_rows(self, split: str) -> np.ndarray:
        if split not in self.splits:
            raise RunDirError(
                f"prepared dataset {self.path} has no {split!r} split; available: {', '.join(self.splits)}"
            )
        return self.splits[split]


def _refuse_run_directory(path: Path) -> None:
    """A run directory (``config.json`` with a run record) given where a prepared dataset is expected."""
    config_path = path / "config.json"
    if not config_path.is_file():
        return
    try:
        config = read_json(config_path)
    except (OSError, ValueError):
        return
    if not isinstance(config, dict) or "kind" not in config:
        return
    prepared = RunInput.of(config).path
    made_from = f" made from prepared dataset {prepared}" if prepared else ""
    raise RunDirError(
        f"{path} is a {config['kind']} run directory{made_from}, not a prepared dataset; give the "
        "prepared dataset (the --out of `cellformer prepare`)"
    )
