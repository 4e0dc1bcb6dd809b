"""User-facing exceptions: the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations


class CellformerError(Exception):
    """Base class for every error a user can fix (bad file, column, option or directory)."""


class InputError(CellformerError):
    """The input data (file, column, layer, values) cannot be used as given."""


class ConfigError(CellformerError):
    """An option or configuration value is invalid."""


class RunDirError(CellformerError):
    """A prepared dataset or run directory is missing, incomplete or incompatible."""
