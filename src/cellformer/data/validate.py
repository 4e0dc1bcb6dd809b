"""Checks on user input: labels, gene names and the values of the expression matrix.

Every failure raises :class:`~cellformer.errors.InputError` naming the file, column or layer and what
to do about it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from cellformer.errors import InputError

log = logging.getLogger(__name__)

# label texts that mean "no label" (compared stripped and in lower case, as pandas reads missing values)
MISSING_LABEL_TEXTS = frozenset({"", "nan", "-nan", "none", "null", "na", "n/a", "<na>", "#n/a"})
NEAR_INTEGER = 0.01  # non-integers all this close to integers are counts with floating-point noise
LOG1P_MAX = 30.0  # log1p values above this would mean > 1e13 counts: larger maxima are linear (FPKM/TPM)


def labels_as_strings(values: np.ndarray | pd.Categorical, path: Path, key: str) -> np.ndarray:
    """Labels of any type (strings, categoricals, integers) as an object array of ``str``; missing → ``None``.

    Missing are NaN / None and the texts of :data:`MISSING_LABEL_TEXTS` (``""``, ``"nan"``, ``"None"``,
    ``"NA"``, ...): such cells have no label (prepare leaves them out); one line logs how many.
    """
    series = pd.Series(values)
    missing = series.isna().to_numpy()
    texts = Counter(
        str(v)
        for v, m in zip(series.tolist(), missing, strict=True)
        if not m and isinstance(v, str) and v.strip().lower() in MISSING_LABEL_TEXTS
    )
    if texts:
        missing = missing | np.array([isinstance(v, str) and v in texts for v in series.tolist()], dtype=bool)
    if missing.any() and not missing.all():
        kinds = [f"{n} {text!r}" for text, n in texts.most_common()]
        n_na = int(missing.sum()) - sum(texts.values())
        if n_na:
            kinds.append(f"{n_na} NaN")
        log.info(
            "label column '%s' of %s: %d cell(s) without a label (%s) are left out",
            key,
            path,
            int(missing.sum()),
            ", ".join(kinds),
        )
    if series.dtype.kind == "f":  # integers stored as float because of NaNs: 3.0 -> "3"
        finite = series[~missing]
        if len(finite) and np.all(finite == np.round(finite)):
            series = series.astype("Int64")
    out = np.array(
        [None if m else str(v) for v, m in zip(series.tolist(), missing, strict=True)], dtype=object
    )
    if missing.all():
        shown = f" (values like {', '.join(repr(t) for t in texts)})" if texts else ""
        raise InputError(f"label column '{key}' in {path} is empty (every value is missing{shown})")
    return out


def check_gene_names(names: np.ndarray, path: Path, gene_key: str | None) -> None:
    """Refuse duplicated or empty gene identifiers (they cannot be aligned between files)."""
    where = f"var['{gene_key}']" if gene_key else "var_names"
    empty = [i for i, n in enumerate(names) if n in ("", "nan", "None")]
    if empty:
        raise InputError(
            f"{len(empty)} gene(s) in {where} of {path} have no name (e.g. position {empty[0]}); "
            "choose another gene column with --gene-key"
        )
    counts = Counter(names.tolist())
    duplicated = [name for name, n in counts.items() if n > 1]
    if duplicated:
        examples = ", ".join(repr(n) for n in duplicated[:5])
        if gene_key:
            hint = (
                f"column '{gene_key}' cannot name genes one to one: choose a var column with unique values "
                "with --gene-key, or leave --gene-key out to use var_names"
            )
        else:
            hint = (
                "make them unique (adata.var_names_make_unique(), then save the file again) or choose a "
                "var column with unique values with --gene-key"
            )
        raise InputError(
            f"{len(duplicated)} duplicated gene name(s) in {where} of {path} (e.g. {examples}); {hint}"
        )


@dataclasses.dataclass
class ValueSummary:
    """What the nonzero values of a matrix look like, accumulated chunk by chunk."""

    path: Path
    matrix: str
    n_values: int = 0
    n_negative: int = 0
    n_fractional: int = 0
    max_value: float = 0.0
    max_rounding: float = 0.0  # largest distance of a value to the nearest integer

    def update(self, data: np.ndarray, first_row: int) -> None:
        """Add one chunk's stored values; NaN or Inf raise immediately."""
        if data.dtype.kind == "f":
            bad = ~np.isfinite(data)
            if bad.any():
                kind = "NaN" if np.isnan(data[bad]).any() else "infinite"
                raise InputError(
                    f"{self.matrix} of {self.path} contains {kind} values (first in the chunk starting at "
                    f"cell {first_row}); replace them (e.g. with 0) or choose another matrix with --layer"
                )
            distance = np.abs(data - np.round(data))
            self.n_fractional += int(np.count_nonzero(distance))
            if len(distance):
                self.max_rounding = max(self.max_rounding, float(distance.max()))
        self.n_values += len(data)
        self.n_negative += int(np.count_nonzero(data < 0))
        if len(data):
            self.max_value = max(self.max_value, float(data.max()))

    @property
    def is_counts(self) -> bool:
        return self.n_negative == 0 and self.n_fractional == 0


def _other_matrices(summary: ValueSummary, matrices: list[str] | None) -> str:
    """``--layer`` advice naming the file's other matrices (a ``counts``-like layer first)."""
    if not matrices:
        return "Point --layer at a raw-count layer"
    others = [m for m in matrices if f"'{m}'" not in summary.matrix and m != summary.matrix]
    counts = [m for m in others if "count" in m.lower()]
    listed = f"available: {', '.join(matrices)}"
    if counts:
        return f"The file has a '{counts[0]}' layer: pass --layer {counts[0]} ({listed})"
    if not others:
        return f"Use a file with raw counts (--layer can name a layer, but this file has only {', '.join(matrices)})"
    return f"Point --layer at a raw-count layer ({listed})"


def decide_transform(
    summary: ValueSummary, input_normalized: bool, input_transform: str, matrices: list[str] | None = None
) -> str:
    """Choose how stored values become count-like values: ``"none"`` or ``"expm1"`` (undo log1p).

    Without ``input_normalized``, anything that is not a non-negative integer is refused.
    With it, log1p values are detected (all values <= ``LOG1P_MAX``) unless ``input_transform`` says.
    ``matrices`` (the file's ``X`` / layers / ``raw.X``) make the advice name a counts layer.
    """
    where = f"{summary.matrix} of {summary.path}"
    if summary.n_negative:
        raise InputError(
            f"{where} has {summary.n_negative} negative values (scaled or centred data?); counts or "
            "normalized expression are needed: choose another matrix with --layer (e.g. counts or raw.X)"
        )
    if not input_normalized:
        if summary.n_fractional and summary.max_rounding <= NEAR_INTEGER:
            raise InputError(
                f"{where} looks like raw counts stored with floating-point noise: all {summary.n_fractional} "
                f"non-integer values (of {summary.n_values}) are within {summary.max_rounding:.2g} of an "
                "integer. Round them and save the file again (adata.X.data = np.rint(adata.X.data) for a "
                "sparse X, adata.X = np.rint(adata.X) for a dense one), or pass --input-normalized to use "
                "the values as they are"
            )
        if summary.n_fractional:
            looks = "log-normalized" if summary.max_value <= LOG1P_MAX else "normalized (FPKM/TPM/CPM?)"
            raise InputError(
                f"{where} does not hold raw counts: {summary.n_fractional} of {summary.n_values} values are "
                f"not integers (max {summary.max_value:.3g}; looks {looks}). "
                f"{_other_matrices(summary, matrices)}, or pass --input-normalized to use normalized values"
            )
        return "none"
    if input_transform == "auto":
        return "expm1" if summary.n_fractional and summary.max_value <= LOG1P_MAX else "none"
    if input_transform == "log1p" and summary.max_value > LOG1P_MAX:
        raise InputError(
            f"values up to {summary.max_value:.3g} in {where} cannot be log1p-transformed (log1p data stays "
            f"below {LOG1P_MAX:g}, i.e. 1e13 counts); use --input-transform none (values used as they are) "
            "or auto"
        )
    return "expm1" if input_transform == "log1p" else "none"
